from nondet.stages import table

table(list(snakemake.input), snakemake.output.csv, snakemake.output.md, snakemake.log[0])
