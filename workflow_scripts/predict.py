import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.io.h5io import set_code_hash
from nondet.workflow.torch_stages import predict

set_code_hash(snakemake.params.code)  # provenance: the code that made the outputs

predict(
    snakemake.input.data,
    snakemake.input.trained,
    snakemake.output[0],
    snakemake.params.job,
    snakemake.log[0],
    snakemake.threads,
    method=snakemake.params.get("method", "plain"),
    tta=snakemake.params.get("tta"),
    plugins=snakemake.params.get("plugins", ()),
)
