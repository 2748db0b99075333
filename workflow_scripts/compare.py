import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.analysis_stages import compare

out = snakemake.output
compare(
    list(snakemake.input.baseline),
    list(snakemake.input.candidate),
    out.csv,
    out.pdf,
    out.png,
    snakemake.params.compare,
    snakemake.log[0],
)
