import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.compare_stages import runs_all_pairs
from nondet.workflow.runtime import end_job, run_stage

p = snakemake.params
run_stage(
    snakemake,
    runs_all_pairs,
    dict(zip(p.groups, snakemake.input)),
    snakemake.output[0],
    {"alpha": p.alpha, "on_diverged": p.on_diverged},
)
end_job()
