import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.io.h5io import set_code_hash
from nondet.workflow.codehash import script_hash
from nondet.workflow.runtime import end_job
from nondet.workflow.torch_stages import divergence

# provenance: the code that made the outputs, hashed here (under code_changes: warn the param is
# the hash the kept output was made with, also when --forcerun remakes it with the current code)
set_code_hash(script_hash(f"{snakemake.scriptdir}/divergence.py"), snakemake.params.code)

divergence(
    snakemake.input.data,
    snakemake.output[0],
    snakemake.params.job,
    snakemake.log[0],
    snakemake.threads,
)
end_job()
