import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.analysis_stages import all_pairs_stage

p = snakemake.params
paths = dict(zip(p.groups, snakemake.input))
params = {"alpha": p.alpha}
all_pairs_stage(paths, snakemake.output[0], params, snakemake.log[0])
