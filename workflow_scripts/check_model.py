import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.runtime import end_job, run_stage
from nondet.workflow.torch_stages import check_model

run_stage(snakemake, check_model, snakemake.input.data, snakemake.output[0], snakemake.wildcards.model)
end_job()
