import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.analysis_stages import dataset  # no torch: every job waits for this one
from nondet.workflow.runtime import end_job, run_stage

run_stage(snakemake, dataset, snakemake.output[0])  # spec, data_hash: the params
end_job()
