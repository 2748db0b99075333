import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.analysis_stages import metrics

metrics(list(snakemake.input), snakemake.output[0], snakemake.params.metrics, snakemake.log[0])
