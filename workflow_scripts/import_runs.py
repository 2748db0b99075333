import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.compare_stages import import_runs
from nondet.workflow.runtime import end_job, run_stage

run_stage(snakemake, import_runs, snakemake.output[0], snakemake.wildcards.group, snakemake.params.runs)
end_job()
