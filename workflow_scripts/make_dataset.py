import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.analysis_stages import make_dataset  # no torch: every job waits for this one

make_dataset(snakemake.output[0], snakemake.params.spec, snakemake.params.data_hash, snakemake.log[0])
