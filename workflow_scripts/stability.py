import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.io.h5io import set_code_hash
from nondet.workflow.analysis_stages import stability

set_code_hash(snakemake.params.code)  # provenance: the code that made the outputs

out = snakemake.output
stability(
    list(snakemake.input),
    out.csv,
    out.md,
    out.pdf,
    out.png,
    snakemake.log[0],
    expect=snakemake.params.expect,
)
