"""Weight averaging while training (nondet.training.averaging): EMA and SWA, sequential and
vectorised, deterministic, resumable bitwise, and changing nothing else of the run."""

import numpy as np
import pytest
import torch

from nondet.seeds import replica_seeds
from nondet.training.averaging import check
from nondet.training.recipe import Bookkeeping, TrainRun
from nondet.training.replica import train_replica
from nondet.training.vectorized import train_replicas_vectorized

CPU = torch.device("cpu")
AVERAGES = {"ema": {"decay": 0.9}, "swa": {"start": 0.5}}
MLP_BN = {"arch": "mlp", "hidden": 16}  # one hidden layer with BatchNorm


def quiet(*a):
    pass


def same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def averaged_recipe(recipe, epochs=4):
    return {**recipe, "epochs": epochs, "eval_every": 0, "averages": AVERAGES}


def train(spec, recipe, seeds_list, data, path, **book):
    run, book = TrainRun(spec, recipe, CPU), Bookkeeping(**{"log": quiet, **book})
    if path == "sequential":
        return [train_replica(run, s, data, book) for s in seeds_list]
    return train_replicas_vectorized(run, seeds_list, data, book, wide=path == "wide")


@pytest.mark.parametrize("path", ["sequential", "vmap", "wide"])
def test_control_replicas_average_bitwise_identically(small_data, recipe, cnn_spec, path):
    """Control replicas (same seeds) end with bitwise identical EMA and SWA weights, on every
    training path; averaging leaves the run itself bitwise unchanged."""
    r = averaged_recipe(recipe, epochs=3)
    seeds = [replica_seeds("control", i, 0) for i in range(2)]
    out = train(cnn_spec, r, seeds, small_data, path)
    for kind in ("ema", "swa"):
        assert all(same(out[0]["averaged"][kind], o["averaged"][kind]) for o in out[1:])
        assert not same(out[0]["averaged"][kind], out[0]["state"])  # an average, not the final weights
    plain = train(cnn_spec, {**r, "averages": {}}, seeds, small_data, path)[0]  # K replicas: same kernels
    assert same(plain["state"], out[0]["state"]) and plain["averaged"] == {}
    assert all(np.array_equal(plain["curve"][k], out[0]["curve"][k], equal_nan=True) for k in plain["curve"])


def test_ema_and_swa_are_the_averages_they_claim(small_data, recipe):
    """EMA = decay-weighted average of the weights after every step (first step copied); SWA =
    the mean of the epochs' final weights after floor(start * epochs) epochs, recomputed from
    the recorded parameters of the same run."""
    spec = {"arch": "mlp", "hidden": 16}
    r = averaged_recipe(recipe)
    steps = -(-len(small_data.y_train) // r["batch_size"])
    res = train_replica(
        TrainRun(spec, r, CPU),
        replica_seeds("init", 1, 0),
        small_data,
        Bookkeeping(log=quiet),
        record_steps=range(1, 4 * steps + 1),
    )
    params = dict(zip(res["records"]["steps"].tolist(), res["records"]["params"]))
    ema = params[1].astype(np.float64)
    for s in range(2, 4 * steps + 1):
        ema = 0.9 * ema + 0.1 * params[s]
    swa = np.mean([params[e * steps] for e in (3, 4)], axis=0)  # start 0.5 of 4 epochs: epochs 3, 4
    names = [n for n in res["state"] if n in dict(res["model"].named_parameters())]
    flat = {kind: np.concatenate([res["averaged"][kind][n].ravel() for n in names]) for kind in ("ema", "swa")}
    np.testing.assert_allclose(flat["ema"], ema, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(flat["swa"], swa, rtol=1e-5, atol=1e-7)


def test_swa_recomputes_batchnorm_statistics_and_ema_averages_them(small_data, recipe):
    """SWA's BatchNorm running mean is the mean of the hidden layer's outputs over the training
    set, in batches, under the averaged weights (update_bn); EMA's is an average of the run's own."""
    r = averaged_recipe(recipe)
    res = train_replica(TrainRun(MLP_BN, r, CPU), replica_seeds("init", 0, 0), small_data, Bookkeeping(log=quiet))
    swa = res["averaged"]["swa"]
    bn = [n[: -len(".running_mean")] for n in swa if n.endswith("running_mean")]
    assert bn, "the test model has BatchNorm"
    # the layer before the BatchNorm: a linear layer without bias over the flattened input
    h = small_data.x_train.flatten(1).numpy() @ swa["hidden.weight"].T
    # update_bn's cumulative average (momentum None) weighs each batch of the pass equally
    size = r["batch_size"]
    expected = np.mean([h[i : i + size].mean(0) for i in range(0, len(h), size)], axis=0)
    np.testing.assert_allclose(swa[bn[0] + ".running_mean"], expected, rtol=1e-4, atol=1e-6)
    assert not np.allclose(res["averaged"]["ema"][bn[0] + ".running_mean"], expected, rtol=1e-4, atol=1e-6)
    # bn: recompute gives EMA the same pass over the training set
    r = {**r, "averages": {"ema": {"decay": 0.9, "bn": "recompute"}}}
    ema = train_replica(TrainRun(MLP_BN, r, CPU), replica_seeds("init", 0, 0), small_data, Bookkeeping(log=quiet))[
        "averaged"
    ]["ema"]
    h = small_data.x_train.flatten(1).numpy() @ ema["hidden.weight"].T
    expected = np.mean([h[i : i + size].mean(0) for i in range(0, len(h), size)], axis=0)
    np.testing.assert_allclose(ema["bn.running_mean"], expected, rtol=1e-4, atol=1e-6)


def test_matmul_model_vectorised_averages_match_sequential(small_data, recipe):
    """The vmap path averages K stacked replicas element by element as one: for a matmul model
    with BatchNorm the averages agree with sequential training to rounding."""
    r = averaged_recipe(recipe, epochs=2)
    seeds = [replica_seeds("all", i, 0) for i in range(2)]
    vec = train(MLP_BN, r, seeds, small_data, "vmap")
    seq = train(MLP_BN, r, seeds, small_data, "sequential")
    for v, s in zip(vec, seq):
        for kind in ("ema", "swa"):
            for n in s["averaged"][kind]:
                np.testing.assert_allclose(v["averaged"][kind][n], s["averaged"][kind][n], rtol=1e-5, atol=1e-6)
    first = next(n for n in seq[0]["averaged"]["ema"] if n.endswith("weight"))
    assert not np.allclose(seq[0]["averaged"]["ema"][first], seq[1]["averaged"]["ema"][first])  # replicas differ


class Killed(Exception):
    pass


def killer(after_epoch):
    """A log that stops training abruptly at the line of epoch ``after_epoch + 1`` (the
    checkpoint of ``after_epoch`` epochs is on disk; nothing later is)."""

    def log(line):
        if f"epoch {after_epoch + 1}/" in line:
            raise Killed(line)

    return log


@pytest.mark.parametrize("path", ["sequential", "wide"])
def test_interrupted_run_resumes_bitwise_with_its_averages(tmp_path, small_data, recipe, cnn_spec, path):
    """Stopped after epoch 2 of 4 and started again, a run resumes from its checkpoint (which
    carries the EMA and SWA weights: SWA has averaged one epoch by then) and ends bitwise equal
    to the uninterrupted run, averages included."""
    r = averaged_recipe(recipe)
    seeds = [replica_seeds("init", 1, 0)]
    whole = train(cnn_spec, r, seeds, small_data, path)[0]
    ckpt = tmp_path / "ckpt.pt"
    kw = {"checkpoint": ckpt, "checkpoint_every": 1}
    with pytest.raises(Killed):
        train(cnn_spec, r, seeds, small_data, path, log=killer(2), **kw)
    assert ckpt.exists()
    lines = []
    resumed = train(cnn_spec, r, seeds, small_data, path, log=lines.append, **kw)[0]
    assert any("resuming from checkpoint" in line and "after epoch 2" in line for line in lines)
    assert same(whole["state"], resumed["state"])
    for kind in ("ema", "swa"):
        assert same(whole["averaged"][kind], resumed["averaged"][kind])


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"ema": {"decay": 1.0}}, r"mitigation.ema.decay must lie in \(0, 1\)"),
        ({"swa": {"start": 1}}, r"mitigation.swa.start must lie in \[0, 1\)"),
        ({"polyak": {}}, "unknown kind 'polyak'; known: ema, swa"),
        ({"ema": {"decay": 0.5, "bn": "skip"}}, "mitigation.ema.bn must be average or recompute"),
    ],
)
def test_bad_averages_fail_naming_the_key(bad, match):
    with pytest.raises(ValueError, match=match):
        check(bad)


def test_user_model_by_import_path_averages_deterministically(recipe):
    """A researcher's image model (examples/mypkg: BatchNorm, nn.Dropout made seeded) gets EMA
    and SWA like the built-in ones: SWA's BatchNorm pass draws no dropout mask, control replicas
    agree bitwise."""
    from pathlib import Path

    from nondet.training.data import from_arrays

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 136)
    x = (rng.integers(0, 100, (136, 1, 12, 12)) + 60 * y[:, None, None, None]).astype(np.uint8)
    images = from_arrays("arrays", {"x_train": x[:96], "y_train": y[:96], "x_test": x[96:], "y_test": y[96:]})

    spec = {
        "arch": "mypkg.models:build",
        "params": {"channels": 4, "dropout": 0.3},
        "features": "pool",
        "pythonpath": str(Path(__file__).resolve().parent.parent / "examples"),
    }
    r = {**averaged_recipe(recipe, epochs=2), "batch_size": 32, "augment": "none"}
    a, b = (
        train_replica(TrainRun(spec, r, CPU), replica_seeds("control", i, 0), images, Bookkeeping(log=quiet))
        for i in range(2)
    )
    for kind in ("ema", "swa"):
        assert same(a["averaged"][kind], b["averaged"][kind])
        assert not same(a["averaged"][kind], a["state"])
