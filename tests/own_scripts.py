"""Training scripts for tests/test_script.py (not a test file): each "trains" in microseconds by
drawing its test logits from the sources it honours, so the tests check the pipeline's handling of
a script (audit, output checks, messages), not training."""

import numpy as np
import torch

SOURCES = ("init", "shuffle", "augment", "dropout", "data")


def _logits(ctx, sources):
    n, k = len(ctx.data.y_test), ctx.data.num_classes
    z = torch.zeros(n, k)
    for s in sources:  # each source its own weight: swapping two seeds changes the logits
        if ctx.seed(s) is not None:
            z += (1 + SOURCES.index(s)) * torch.randn(n, k, generator=ctx.generator(s))
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
    torch.save({"logits": z, "features": z[:, :4].clone(), "labels": ctx.data.y_test.clone()}, ctx.out)


def as_hdf5_file(ctx):
    import h5py

    with h5py.File(ctx.out, "w") as f:
        f["logits"] = _logits(ctx, SOURCES).numpy()
        f["labels"] = ctx.data.y_test.numpy()


def no_labels(ctx):
    """Writes only logits, as a command script that predates the labels check would."""
    np.savez(ctx.out, logits=_logits(ctx, SOURCES).numpy())


def own_split(ctx):
    """Scores a test set of its own of the same size (another split), labels and all."""
    g = torch.Generator().manual_seed(5)
    labels = ctx.data.y_train[torch.randperm(len(ctx.data.y_train), generator=g)[: len(ctx.data.y_test)]]
    ctx.save(_logits(ctx, SOURCES), labels=labels)


def reversed_order(ctx):
    """The data set's test examples, written in reverse row order (labels in the same order)."""
    ctx.save(_logits(ctx, SOURCES).flip(0), labels=ctx.data.y_test.flip(0))


def own_bootstrap(ctx):
    """Asks for its resample, then trains on a bootstrap of its own and says so."""
    ctx.save(_logits(ctx, SOURCES))
    n = len(ctx.data.y_train)
    if ctx.seed("data") is not None:
        own = np.sort(np.random.default_rng(ctx.seed("data")).integers(0, n, n))
        with np.load(ctx.out) as f:
            arrays = dict(f)
        np.savez(ctx.out, **{**arrays, "train_index": own})


# --- six habits that draw from a global generator (the audit names each) ----------------------


def _fit(ctx, model, loader, epochs=2, step=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(epochs):
        for batch in loader:
            x, y = batch[0], batch[1]
            if step:
                x = step(x)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        ctx.save(model(ctx.data.x_test.flatten(1)))


def _honest_parts(ctx, dropout=0.0):
    x, y = ctx.data.x_train.flatten(1), ctx.data.y_train
    with ctx.init():
        model = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], 16), torch.nn.ReLU(), torch.nn.Dropout(dropout), torch.nn.Linear(16, 10)
        )
    ds = torch.utils.data.TensorDataset(x, y)
    return model, ds


def _loader(ctx, ds, **kw):
    return torch.utils.data.DataLoader(ds, batch_size=32, sampler=ctx.sampler(len(ds)), **kw)


def habit_python_random(ctx):
    import random

    model, ds = _honest_parts(ctx)
    _fit(ctx, model, _loader(ctx, ds), step=lambda x: x * (1 + 0.1 * random.random()))


def habit_numpy_mixup(ctx):
    model, ds = _honest_parts(ctx)
    lam = lambda x: np.float32(np.random.beta(0.4, 0.4)) * x + (1 - np.float32(0.5)) * x.flip(0)  # noqa: E731
    _fit(ctx, model, _loader(ctx, ds), step=lam)


def habit_shuffle_true(ctx):
    model, ds = _honest_parts(ctx)
    _fit(ctx, model, torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True))


def habit_init_outside(ctx):
    _, ds = _honest_parts(ctx)
    model = torch.nn.Sequential(torch.nn.Linear(ds[0][0].numel(), 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    _fit(ctx, model, _loader(ctx, ds))


def habit_plain_dropout(ctx):
    model, ds = _honest_parts(ctx, dropout=0.5)
    model.train()
    _fit(ctx, model, _loader(ctx, ds))


class _Jitter(torch.utils.data.Dataset):
    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        x, y = self.ds[i]
        return x + 0.1 * torch.rand(x.shape), y  # a worker's draw from torch's global RNG


def habit_workers(ctx):
    model, ds = _honest_parts(ctx)
    _fit(ctx, model, _loader(ctx, _Jitter(ds), num_workers=1))


def one_seed_everything(ctx):
    """Seeds torch's global RNG from init and draws everything from it (seed_everything style)."""
    torch.manual_seed(ctx.seed("init"))
    _, ds = _honest_parts(ctx)
    model = torch.nn.Sequential(torch.nn.Linear(ds[0][0].numel(), 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    _fit(ctx, model, torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True))


def combined_seed(ctx):
    """One seed from init + shuffle drives everything: swapping them changes nothing."""
    torch.manual_seed(ctx.seed("init") + ctx.seed("shuffle"))
    _, ds = _honest_parts(ctx)
    model = torch.nn.Sequential(torch.nn.Linear(ds[0][0].numel(), 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    _fit(ctx, model, torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True))


def sleeps(ctx):
    import time

    time.sleep(600)


def owned(ctx):
    """data: script: scores a test set of its own (50 examples, 3 classes of its own)."""
    y = torch.arange(50) % 3
    z = torch.zeros(50, 3)
    for s in ("init", "shuffle"):
        z += (1 + SOURCES.index(s)) * torch.randn(50, 3, generator=ctx.generator(s))
    ctx.save(z, labels=y)


def owned_reordered(ctx):
    """data: script, but replica 1 writes its test set in another order."""
    y = torch.arange(50) % 3
    if ctx.replica == 1:
        y = y.flip(0)
    ctx.save(torch.randn(50, 3, generator=ctx.generator("init")), labels=y)


# --- data: script with the data source on (its own training set, the replica's resample) ----------

OWN_TRAIN = 40  # the size of the training set these scripts own


def _own_training_set():
    return torch.arange(OWN_TRAIN) % 3  # its labels


def _owned_logits(ctx, index):
    """Test logits from init and from the label counts of the training examples it trained on."""
    z = torch.randn(50, 3, generator=ctx.generator("init")) if ctx.seed("init") is not None else torch.zeros(50, 3)
    y_train = _own_training_set().numpy()[np.arange(OWN_TRAIN) if index is None else index]
    return z + torch.from_numpy(np.bincount(y_train, minlength=3)).float() / len(y_train)


def owned_resampled(ctx):
    """data: script: draws its replica's resample of its own training set with ctx.train_index."""
    ctx.save(_owned_logits(ctx, ctx.train_index(OWN_TRAIN)), labels=torch.arange(50) % 3)


def owned_own_bootstrap(ctx):
    """data: script: asks for the resample, trains on a bootstrap of its own and reports that."""
    own = np.sort(np.random.default_rng(ctx.seed("data") or 0).integers(0, OWN_TRAIN, OWN_TRAIN))
    np.savez(
        ctx.out,
        logits=_owned_logits(ctx, own).numpy(),
        labels=np.arange(50) % 3,
        train_index=own,
        n_train=OWN_TRAIN,
    )


def owned_no_n_train(ctx):
    """data: script: trains on the replica's resample, reports the index but not n_train."""
    index = ctx.train_index(OWN_TRAIN)
    np.savez(ctx.out, logits=_owned_logits(ctx, index).numpy(), labels=np.arange(50) % 3, train_index=index)


def owned_reads_data(ctx):
    """data: script, but reads the pipeline's data set (which is not there)."""
    ctx.save(torch.zeros(len(ctx.data.y_test), 3), labels=torch.arange(50) % 3)
