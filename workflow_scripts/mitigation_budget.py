import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.analysis_stages import mitigation_budget
from nondet.workflow.runtime import end_job, run_stage

run_stage(snakemake, mitigation_budget)
end_job()
