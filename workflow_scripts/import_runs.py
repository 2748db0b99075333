import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.io.h5io import set_code_hash
from nondet.workflow.compare_stages import import_runs

set_code_hash(snakemake.params.code)  # provenance: the code that made the outputs

import_runs(snakemake.output[0], snakemake.wildcards.group, snakemake.params.runs, snakemake.log[0])
