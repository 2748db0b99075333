import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.runs import all_pairs_stage

p = snakemake.params
paths = dict(zip(p.groups, snakemake.input))
params = {"alpha": p.alpha, "on_diverged": p.on_diverged}
all_pairs_stage(paths, snakemake.output[0], params, snakemake.log[0])
