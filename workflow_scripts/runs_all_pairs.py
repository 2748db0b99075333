import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.io.h5io import set_code_hash
from nondet.workflow.compare_stages import runs_all_pairs

set_code_hash(snakemake.params.code)  # provenance: the code that made the outputs

p = snakemake.params
paths = dict(zip(p.groups, snakemake.input))
params = {"alpha": p.alpha, "on_diverged": p.on_diverged}
runs_all_pairs(paths, snakemake.output[0], params, snakemake.log[0])
