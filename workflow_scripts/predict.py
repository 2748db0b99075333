import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.runtime import end_job, run_stage
from nondet.workflow.torch_stages import predict

run_stage(
    snakemake, predict, snakemake.input.data, snakemake.input.trained, snakemake.output[0], threads=snakemake.threads
)
end_job()
