import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.script import train_script

train_script(
    snakemake.input.data,
    snakemake.output[0],
    snakemake.params.job,
    snakemake.log[0],
    snakemake.threads,
)
