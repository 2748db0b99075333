"""Tabular inputs (N, D): accepted by the data checks, trained by the built-in linear model and
MLP and by user models, refused with a clear message by the conv nets and by augmentations that
need signals or images. A few seconds."""

import numpy as np
import pytest
import torch

from nondet.io.checksums import DataError
from nondet.io.datasets import validate_arrays
from nondet.seeds import replica_seeds, torch_generator
from nondet.training.data import from_arrays
from nondet.training.models import build_model
from nondet.training.predict import predict
from nondet.training.recipe import Bookkeeping, TrainRun
from nondet.training.replica import ReplicaDraws, train_replica
from nondet.training.resample import replica_index
from nondet.training.usermodel import check_model

CPU = torch.device("cpu")


def tabular(n=300, d=12, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (k, d))
    y = rng.integers(0, k, n)
    x = (centres[y] + rng.normal(0, 1, (n, d))).astype(np.float32)
    return {"x_train": x[:240], "y_train": y[:240], "x_test": x[240:], "y_test": y[240:]}


@pytest.mark.parametrize("spec", [{"arch": "linear"}, {"arch": "mlp", "hidden": 16, "dropout": 0.2}])
def test_builtin_linear_and_mlp_train_on_tabular_features(recipe, spec):
    data = from_arrays("arrays", validate_arrays(tabular(), "test"))
    assert data.input_shape == (12,)
    quick = {**recipe, "epochs": 2, "augment": "auto"}  # auto: no augmentation of features
    runs = [
        train_replica(TrainRun(spec, quick, CPU), replica_seeds(c, 1, 0), data, Bookkeeping(log=lambda *a: None))
        for c in ("control", "init")
    ]
    logits = [predict(r["model"], data.x_test)[0] for r in runs]
    assert logits[0].shape == (60, 3) and not torch.equal(logits[0], logits[1])
    assert float((logits[0].argmax(1) == data.y_test).float().mean()) > 0.5  # separable clusters


def test_tabular_inputs_are_refused_where_they_cannot_fit(recipe):
    data = from_arrays("arrays", validate_arrays(tabular(), "test"))
    with pytest.raises(ValueError, match=r"'cnn1d' needs signals .* tabular \(N, D\) = \(N, 12\): use linear or mlp"):
        build_model({"arch": "cnn1d"}, data.input_shape, 3, torch_generator(0))
    with pytest.raises(ValueError, match="training.augment 'shift' does not fit .* use none"):
        train_replica(
            TrainRun({"arch": "linear"}, {**recipe, "augment": "shift"}, CPU), replica_seeds("control", 0, 0), data
        )
    arrays = tabular()
    arrays["x_train"] = arrays["x_train"].astype(np.uint8)
    with pytest.raises(DataError, match=r"tabular \(N, D\) uint8; use float32"):
        validate_arrays(arrays, "test")
    with pytest.raises(DataError, match=r"expected tabular features \(N, D\), 1-D signals"):
        validate_arrays({**tabular(), "x_train": np.zeros(240, np.float32)}, "test")


def test_a_user_model_takes_tabular_input_shape(tmp_path):
    (tmp_path / "tabmodel.py").write_text(
        "from torch import nn\n"
        "def build(input_shape, num_classes, hidden=8):\n"
        "    return nn.Sequential(nn.Linear(input_shape[0], hidden), nn.ReLU(), nn.Dropout(0.1),"
        " nn.Linear(hidden, num_classes))\n"
    )
    summary = check_model({"arch": "tabmodel:build", "pythonpath": str(tmp_path), "params": {}}, (12,), 3, "tab")
    assert summary["dropout_layers"] == 1


@pytest.fixture(scope="module")
def tab_user_model(tmp_path_factory):
    """An import-path user model for (N, D) features, with one nn.Dropout."""
    folder = tmp_path_factory.mktemp("tabuser")
    (folder / "tabuser.py").write_text(
        "from torch import nn\n"
        "def build(input_shape, num_classes, hidden=16):\n"
        "    return nn.Sequential(nn.Linear(input_shape[0], hidden), nn.ReLU(), nn.Dropout(0.1),"
        " nn.Linear(hidden, num_classes))\n"
    )
    return {"arch": "tabuser:build", "pythonpath": str(folder), "params": {}}


def test_a_user_model_trains_on_tabular_features(recipe, tab_user_model):
    """The training function trains an import-path user model on (N, D) float features: 2 epochs
        on 240 rows, finite logits of shape (n_test, classes), weights moved from their initial values
    (no accuracy threshold: where a metric lands depends on the CPU's rounding). About a second."""
    data = from_arrays("arrays", validate_arrays(tabular(), "test"))
    quick = {**recipe, "epochs": 2, "augment": "auto"}
    run = train_replica(
        TrainRun(tab_user_model, quick, CPU), replica_seeds("control", 0, 0), data, Bookkeeping(log=lambda *a: None)
    )
    assert not run["diverged"] and len(run["curve"]["train_loss"]) == 2
    logits = predict(run["model"], data.x_test)[0]
    assert logits.shape == (60, 3) and bool(torch.isfinite(logits).all())
    from nondet.training.replica import build_replica

    initial, _ = build_replica(tab_user_model, quick, replica_seeds("control", 0, 0), data, CPU)
    moved = [not torch.equal(torch.as_tensor(run["state"][k]), v) for k, v in initial.state_dict().items()]
    assert any(moved)  # lr > 0 and finite gradients: training changed the weights


def test_the_data_source_trains_a_user_model_on_another_index_set(recipe, tab_user_model):
    """data replicas of an import-path user model: only the data seed differs, each trains on its
    own resample (the epoch's order draws from it alone), and the trained weights differ; control
    replicas stay bitwise identical. About a second."""
    data = from_arrays("arrays", validate_arrays(tabular(), "test"))
    quick = {**recipe, "epochs": 1, "augment": "auto"}
    n = len(data.y_train)
    d0, d1 = (replica_seeds("data", r, 0) for r in (0, 1))
    assert {k for k, v in d0.as_dict().items() if v != d1.as_dict()[k]} == {"data"}
    i0, i1 = (replica_index(s.data, n, quick.get("resample")) for s in (d0, d1))
    assert not np.array_equal(i0, i1) and len(np.unique(i0)) < n  # bootstrap: repeats, some left out
    for seeds, index in ((d0, i0), (d1, i1)):  # the examples the training loop visits
        order = ReplicaDraws(seeds, quick, n, CPU).order(0).numpy()
        assert np.array_equal(np.sort(order), index)

    def run(s):
        return train_replica(TrainRun(tab_user_model, quick, CPU), s, data, Bookkeeping(log=lambda *a: None))["state"]

    a, b = run(d0), run(d1)
    assert any(not np.array_equal(a[k], b[k]) for k in a)
    c0, c1 = run(replica_seeds("control", 0, 0)), run(replica_seeds("control", 1, 0))
    assert all(np.array_equal(c0[k], c1[k]) for k in c0)
