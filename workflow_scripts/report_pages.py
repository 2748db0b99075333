import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # nondet, also inside conda envs
from nondet.workflow.reportpages import write_pages
from nondet.workflow.runtime import end_job

write_pages(list(snakemake.input), snakemake.params.run, snakemake.log[0])
end_job()
