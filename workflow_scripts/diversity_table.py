import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.io.h5io import set_code_hash
from nondet.workflow.analysis_stages import diversity_table

set_code_hash(snakemake.params.code)  # provenance: the code that made the outputs

diversity_table(
    list(snakemake.input),
    snakemake.output.csv,
    snakemake.output.md,
    snakemake.log[0],
    expect=snakemake.params.expect,
)
