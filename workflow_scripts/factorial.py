import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.io.h5io import set_code_hash
from nondet.workflow.compare_stages import factorial

set_code_hash(snakemake.params.code)  # provenance: the code that made the outputs

out = snakemake.output
factorial(list(snakemake.input), out.csv, out.pdf, out.png, snakemake.params.design, snakemake.log[0])
