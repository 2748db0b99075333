from nondet.stages import metrics

metrics(list(snakemake.input), snakemake.output[0], snakemake.params.metrics, snakemake.log[0])
