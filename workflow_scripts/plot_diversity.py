import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.analysis_stages import plot_diversity

plot_diversity(
    list(snakemake.input),
    snakemake.output.pdf,
    snakemake.output.png,
    snakemake.wildcards.model,
    snakemake.log[0],
    expect=snakemake.params.expect,
)
