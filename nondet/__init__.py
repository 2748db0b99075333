"""nondet: measure run-to-run variability of neural network training, one source at a time.

Modules: seeds (one seed per source), data, augment, models, bitflip, training, predict,
metrics, h5io (HDF5 with provenance), config (schema and job plan), stages (what each Snakemake
rule does), plots, tables.
"""

__version__ = "0.1.0"
