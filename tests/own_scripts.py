"""Training scripts for tests/test_script.py (not a test file): each "trains" in microseconds by
drawing its test logits from the sources it honours, so the tests check the pipeline's handling of
a script (audit, output checks, messages), not training."""

import numpy as np
import torch

SOURCES = ("init", "shuffle", "augment", "dropout", "data")


def _logits(ctx, sources):
    n, k = len(ctx.data.y_test), ctx.data.num_classes
    z = torch.zeros(n, k)
    for s in sources:
        if ctx.seed(s) is not None:
            z += torch.randn(n, k, generator=ctx.generator(s))
    index = ctx.train_index(len(ctx.data.y_train))
    if index is not None:  # a model "trained" on the resample: its label counts shift the logits
        z += torch.from_numpy(np.bincount(ctx.data.y_train.numpy()[index], minlength=k)).float() / len(index)
    return z


def honest(ctx):
    ctx.save(_logits(ctx, SOURCES))


def ignores_shuffle(ctx):
    ctx.save(_logits(ctx, [s for s in SOURCES if s != "shuffle"]))


def global_rng(ctx):
    """Draws from the global torch RNG (as an unseeded DataLoader or torch.randn would)."""
    ctx.save(_logits(ctx, SOURCES) + torch.randn(len(ctx.data.y_test), ctx.data.num_classes))


def crashes(ctx):
    raise RuntimeError("CUDA out of memory (pretend)")


def writes_nothing(ctx):
    pass


def wrong_shape(ctx):
    ctx.save(_logits(ctx, SOURCES)[:, :3])


def nan_logits(ctx):
    z = _logits(ctx, SOURCES)
    z[5] = float("nan")
    ctx.save(z)


def as_torch_file(ctx):
    """Writes a torch.save dict at ctx.out (any suffix: the content says what it is)."""
    z = _logits(ctx, SOURCES)
    torch.save({"logits": z, "features": z[:, :4].clone()}, ctx.out)


def as_hdf5_file(ctx):
    import h5py

    with h5py.File(ctx.out, "w") as f:
        f["logits"] = _logits(ctx, SOURCES).numpy()
        f["labels"] = ctx.data.y_test.numpy()
