import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.analysis_stages import diversity_table

diversity_table(
    list(snakemake.input),
    snakemake.output.csv,
    snakemake.output.md,
    snakemake.log[0],
    expect=snakemake.params.expect,
)
