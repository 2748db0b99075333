import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.io.h5io import set_code_hash
from nondet.workflow.analysis_stages import dataset  # no torch: every job waits for this one

set_code_hash(snakemake.params.code)  # provenance: the code that made the outputs

dataset(snakemake.output[0], snakemake.params.spec, snakemake.params.data_hash, snakemake.log[0])
