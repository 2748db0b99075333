import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.analysis_stages import ensembles
from nondet.workflow.runtime import end_job, run_stage

run_stage(snakemake, ensembles, list(snakemake.input), snakemake.output[0], snakemake.params.ensembles)
end_job()
