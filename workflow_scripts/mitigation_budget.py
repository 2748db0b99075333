import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.analysis_stages import mitigation_budget

out = snakemake.output
mitigation_budget(
    list(snakemake.input),
    out.csv,
    out.md,
    out.pdf,
    out.png,
    snakemake.log[0],
    expect=snakemake.params.expect,
    labels=snakemake.params.get("labels"),
)
