import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.analysis_stages import provenance
from nondet.workflow.runtime import end_job, run_stage

run_stage(snakemake, provenance, csv_path=snakemake.output[0], files=list(snakemake.input))
end_job()
