from nondet.stages import plot

plot(
    list(snakemake.input),
    snakemake.output.pdf,
    snakemake.output.png,
    snakemake.wildcards.model,
    snakemake.log[0],
)
