import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.io.h5io import set_code_hash
from nondet.workflow.torch_stages import check_model

set_code_hash(snakemake.params.code)  # provenance: the code that made the outputs

check_model(
    snakemake.input.data,
    snakemake.output[0],
    snakemake.wildcards.model,
    snakemake.params.spec,
    snakemake.params.conditions,
    snakemake.params.bitflip_tensor,
    snakemake.params.data_hash,
    snakemake.log[0],
)
