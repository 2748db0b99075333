import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.analysis_stages import metrics
from nondet.workflow.runtime import end_job, run_stage

run_stage(snakemake, metrics, list(snakemake.input), snakemake.output[0], snakemake.params.metrics)
end_job()
