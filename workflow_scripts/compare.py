import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.compare_stages import compare
from nondet.workflow.runtime import end_job, run_stage

inp, out = snakemake.input, snakemake.output
paths = {k: out[k] for k in ("verdict", "md", "csv", "plan", "pdf", "png")}
arm = lambda x: [x] if isinstance(x, str) else list(x)  # noqa: E731  one imported file, or chunks
run_stage(snakemake, compare, arm(inp.baseline), arm(inp.candidate), paths, snakemake.params.compare)
end_job()
