import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.analysis_stages import plot_divergence

plot_divergence(
    snakemake.input[0],
    snakemake.output.pdf,
    snakemake.output.png,
    snakemake.log[0],
    expect=snakemake.params.expect,
)
