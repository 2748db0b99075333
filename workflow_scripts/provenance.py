import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.io.h5io import set_code_hash
from nondet.workflow.analysis_stages import provenance

set_code_hash(snakemake.params.code)  # provenance: the code that made the outputs

provenance(snakemake.params.config, snakemake.output[0], snakemake.log[0], files=list(snakemake.input))
