import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.analysis_stages import import_runs

import_runs(snakemake.output[0], snakemake.wildcards.group, snakemake.params.runs, snakemake.log[0])
