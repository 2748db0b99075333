import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.analysis_stages import ensemble_table
from nondet.workflow.runtime import end_job, run_stage

run_stage(snakemake, ensemble_table, list(snakemake.input.ensembles), list(snakemake.input.mitigation))
end_job()
