import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.io.h5io import set_code_hash
from nondet.workflow.codehash import script_hash
from nondet.workflow.runtime import end_job
from nondet.workflow.script import train_script
from nondet.workflow.scriptbox import DEFAULT_TIMEOUT

# provenance: the code that made the outputs, hashed here (under code_changes: warn the param is
# the hash the kept output was made with, also when --forcerun remakes it with the current code)
set_code_hash(script_hash(f"{snakemake.scriptdir}/train_script.py"), snakemake.params.code)

train_script(
    snakemake.input.data[0] if snakemake.input.data else None,  # none: data: script
    snakemake.output[0],
    snakemake.params.job,
    snakemake.log[0],
    snakemake.threads,
    # read here, not a param: raising a timeout must not rerun finished jobs
    timeout=snakemake.config["models"][snakemake.params.job["model"]].get("timeout", DEFAULT_TIMEOUT),
    audit_path=snakemake.input.audit[0] if snakemake.input.audit else None,
)
end_job()
