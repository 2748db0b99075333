import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.torch_stages import divergence

divergence(
    snakemake.input.data,
    snakemake.output[0],
    snakemake.params.job,
    snakemake.log[0],
    snakemake.threads,
)
