import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.analysis_stages import factorial

out = snakemake.output
factorial(list(snakemake.input), out.csv, out.pdf, out.png, snakemake.params.design, snakemake.log[0])
