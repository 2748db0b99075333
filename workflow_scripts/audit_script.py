import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.io.h5io import set_code_hash
from nondet.workflow.script import audit_script

set_code_hash(snakemake.params.code)  # provenance: the code that made the outputs

audit_script(
    snakemake.input.data,
    snakemake.output[0],
    snakemake.params.job,
    snakemake.log[0],
    snakemake.threads,
)
