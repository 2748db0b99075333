import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.analysis_stages import plot_diversity

out = snakemake.output
plot_diversity(list(snakemake.input), out.pdf, out.png, snakemake.wildcards.run_model, snakemake.log[0])
