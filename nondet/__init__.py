"""nondet: measure run-to-run variability of neural network training, one source at a time.

The protocol: seeds, bitflip, dropout, augment, training (+ vectorized, stacked, optim), predict, tta. Models and
data: models, usermodel, data. Measurements: metrics, divergence, compare, inference, runs, paper. The
pipeline: config, plan, methods, runtime, gpus, files, h5io, torch_stages, analysis_stages, tables, plots.
See README.md ("Layout") and docs/protocol.md.
"""

__version__ = "0.1.0"
