"""Tabular inputs (N, D): accepted by the data checks, trained by the built-in linear model and
MLP and by user models, refused with a clear message by the conv nets and by augmentations that
need signals or images. A few seconds."""

import numpy as np
import pytest
import torch

from nondet.data import DataError, from_arrays, validate_arrays
from nondet.models import build_model
from nondet.predict import predict
from nondet.seeds import replica_seeds, torch_generator
from nondet.training import train_replica
from nondet.usermodel import check_model

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
    runs = [train_replica(spec, quick, replica_seeds(c, 1, 0), data, CPU, log=lambda *a: None)
            for c in ("control", "init")]  # fmt: skip
    logits = [predict(r["model"], data.x_test)[0] for r in runs]
    assert logits[0].shape == (60, 3) and not torch.equal(logits[0], logits[1])
    assert float((logits[0].argmax(1) == data.y_test).float().mean()) > 0.5  # separable clusters


def test_tabular_inputs_are_refused_where_they_cannot_fit(recipe):
    data = from_arrays("arrays", validate_arrays(tabular(), "test"))
    with pytest.raises(ValueError, match=r"'cnn1d' needs signals .* tabular \(N, D\) = \(N, 12\): use linear or mlp"):
        build_model({"arch": "cnn1d"}, data.input_shape, 3, torch_generator(0))
    with pytest.raises(ValueError, match="training.augment 'shift' does not fit .* use none"):
        train_replica({"arch": "linear"}, {**recipe, "augment": "shift"}, replica_seeds("control", 0, 0), data, CPU)
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
