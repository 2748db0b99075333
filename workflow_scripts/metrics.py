import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.io.h5io import set_code_hash
from nondet.workflow.analysis_stages import metrics

set_code_hash(snakemake.params.code)  # provenance: the code that made the outputs

metrics(list(snakemake.input), snakemake.output[0], snakemake.params.metrics, snakemake.log[0])
