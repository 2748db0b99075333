import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.io.h5io import set_code_hash
from nondet.workflow.analysis_stages import paper_comparison

set_code_hash(snakemake.params.code)  # provenance: the code that made the outputs

mitigation = list(snakemake.input.mitigation)  # empty when the run has no mitigation study
paper_comparison(
    snakemake.input.expected,
    snakemake.input.diversity,
    mitigation[0] if mitigation else None,
    snakemake.output.csv,
    snakemake.output.md,
    snakemake.log[0],
)
