import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.analysis_stages import paper_comparison
from nondet.workflow.runtime import end_job, run_stage

mitigation = list(snakemake.input.mitigation)  # empty when the run has no mitigation study
run_stage(
    snakemake,
    paper_comparison,
    snakemake.input.expected,
    snakemake.input.diversity,
    mitigation[0] if mitigation else None,
)
end_job()
