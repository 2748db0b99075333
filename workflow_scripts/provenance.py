from nondet.stages import provenance_table

provenance_table(snakemake.params.config, snakemake.output[0], snakemake.log[0])
