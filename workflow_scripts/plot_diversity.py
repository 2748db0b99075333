import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.io.h5io import set_code_hash
from nondet.workflow.analysis_stages import plot_diversity

set_code_hash(snakemake.params.code)  # provenance: the code that made the outputs

plot_diversity(
    list(snakemake.input),
    snakemake.output.pdf,
    snakemake.output.png,
    snakemake.wildcards.model,
    snakemake.log[0],
    expect=snakemake.params.expect,
)
