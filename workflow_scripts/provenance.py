import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.analysis_stages import provenance

provenance(snakemake.params.config, snakemake.output[0], snakemake.log[0], files=list(snakemake.input))
