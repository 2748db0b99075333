from nondet.stages import make_dataset

make_dataset(
    snakemake.output[0], snakemake.params.spec, snakemake.params.data_hash, snakemake.log[0]
)
