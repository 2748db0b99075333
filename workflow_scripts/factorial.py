import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.compare_stages import factorial
from nondet.workflow.runtime import end_job, run_stage

run_stage(snakemake, factorial, params=snakemake.params.design)
end_job()
