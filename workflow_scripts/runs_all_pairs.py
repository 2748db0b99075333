import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.analysis_stages import runs_all_pairs

p = snakemake.params
paths = dict(zip(p.groups, snakemake.input))
params = {"alpha": p.alpha, "on_diverged": p.on_diverged}
runs_all_pairs(paths, snakemake.output[0], params, snakemake.log[0])
