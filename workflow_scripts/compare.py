import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.io.h5io import set_code_hash
from nondet.workflow.compare_stages import compare

set_code_hash(snakemake.params.code)  # provenance: the code that made the outputs

inp, out = snakemake.input, snakemake.output
paths = {k: out[k] for k in ("verdict", "md", "csv", "plan", "pdf", "png")}
arm = lambda x: [x] if isinstance(x, str) else list(x)  # noqa: E731  one imported file, or chunks
compare(arm(inp.baseline), arm(inp.candidate), paths, snakemake.params.compare, snakemake.log[0])
