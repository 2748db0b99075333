import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.analysis_stages import plot_diversity
from nondet.workflow.runtime import end_job, run_stage

run_stage(snakemake, plot_diversity, model=snakemake.wildcards.run_model)
end_job()
