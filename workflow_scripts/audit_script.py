import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.io.h5io import set_code_hash
from nondet.workflow.runtime import end_job
from nondet.workflow.script import audit_script
from nondet.workflow.scriptbox import DEFAULT_TIMEOUT

set_code_hash(snakemake.params.code)  # provenance: the code that made the outputs

audit_script(
    snakemake.input.data[0] if snakemake.input.data else None,  # none: data: script
    snakemake.output[0],
    snakemake.params.job,
    snakemake.log[0],
    snakemake.threads,
    # read here, not a param: raising a timeout must not rerun finished jobs
    timeout=snakemake.config["models"][snakemake.params.job["model"]].get("timeout", DEFAULT_TIMEOUT),
)
end_job()
