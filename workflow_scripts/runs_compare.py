import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.runs import compare_stage

out = snakemake.output
compare_stage(snakemake.input.baseline, snakemake.input.candidate, out.csv, out.plan, out.pdf,
              out.png, snakemake.params.compare, snakemake.log[0])  # fmt: skip
