import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.analysis_stages import paper_comparison

mitigation = list(snakemake.input.mitigation)  # empty when the run has no mitigation study
paper_comparison(
    snakemake.input.expected,
    snakemake.input.diversity,
    mitigation[0] if mitigation else None,
    snakemake.output.csv,
    snakemake.output.md,
    snakemake.log[0],
)
