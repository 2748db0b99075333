"""nondet: measure run-to-run variability of neural network training, one source at a time.

Folders by layer (docs/contributing.md#layout); a module imports only from its own folder, the
folders below it and the shared leaves (seeds, methods, schema):

- ``nondet.io``: HDF5 files with provenance (h5io, files) and runs trained elsewhere (runs);
- ``nondet.training``: the torch side: models, data, sources of randomness, the training loop;
- ``nondet.analysis``: no torch: metrics, the verdict engine (inference), tables, plots;
- ``nondet.workflow``: config, plan (every job's parameters and seeds) and the stages the rules call.
"""

__version__ = "0.1.0"
