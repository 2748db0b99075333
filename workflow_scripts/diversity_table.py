import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.analysis_stages import diversity_table
from nondet.workflow.runtime import end_job, run_stage

run_stage(snakemake, diversity_table)
end_job()
