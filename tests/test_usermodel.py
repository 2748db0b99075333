"""A researcher's own model by import path: init from the init seed alone, nn.Dropout made
seeded, other stochastic layers keyed per step, features by hook, and one clear error per bad
input (at config time where torch is not needed, else in check_model before any training)."""

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nondet.seeds import replica_seeds, torch_generator
from nondet.training.data import from_arrays
from nondet.training.dropout import SeededDropout
from nondet.training.models import build_model
from nondet.training.recipe import Bookkeeping, TrainRun
from nondet.training.replica import build_replica, train_replica
from nondet.training.usermodel import ModelError, check_model, forward_with_features
from nondet.workflow import config as cfg
from nondet.workflow import plan

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = str(REPO / "examples")
SPEC = {
    "arch": "mypkg.models:build",
    "params": {"channels": 4, "dropout": 0.3},
    "features": "pool",
    "pythonpath": EXAMPLES,
}

BAD = '''
import math

import torch
from torch import nn

def not_a_module(input_shape, num_classes):
    return "a string"

def wrong_shape(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes + 1))

def fixed(input_shape, num_classes, width=4):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))

def crashes(input_shape, num_classes):
    return nn.Sequential(nn.Linear(3, num_classes))

class Noisy(nn.Module):
    """A stochastic layer that is not nn.Dropout: channel dropout on the global RNG."""

    def __init__(self, c, k):
        super().__init__()
        self.conv = nn.Conv1d(c, 8, 3, padding=1)
        self.drop = nn.Dropout1d(0.5)
        self.fc = nn.Linear(8, k)

    def forward(self, x):
        return self.fc(self.drop(self.conv(x)).mean(-1))

def noisy(input_shape, num_classes):
    return Noisy(input_shape[0], num_classes)

def lazy(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

NOT_CALLABLE = 3
'''


@pytest.fixture(scope="module")
def badpkg(tmp_path_factory):
    root = tmp_path_factory.mktemp("userpkg")
    (root / "badpkg.py").write_text(textwrap.dedent(BAD))
    (root / "brokenimport.py").write_text("def build(input_shape, num_classes):\n    return 1 +\n")
    return str(root)


@pytest.fixture(scope="module")
def images():
    """A tiny image set (uint8, 3 classes told apart by brightness), 96 train / 40 test."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 136)
    x = (rng.integers(0, 100, (136, 1, 12, 12)) + 60 * y[:, None, None, None]).astype(np.uint8)
    return from_arrays("arrays", {"x_train": x[:96], "y_train": y[:96], "x_test": x[96:], "y_test": y[96:]})


def recipe(**changes):
    return {
        "epochs": 2,
        "batch_size": 32,
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5e-3,
        "warmup_epochs": 0,
        "cycles": 1,
        "augment": "crop",
        "augment_size": 1,
        "kernels_cpu_standin": True,
        "eval_every": 0,
        **changes,
    }


def same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# --- init, dropout, features --------------------------------------------------------------------


def test_init_comes_from_the_init_seed_and_leaves_the_global_rng_alone(images):
    state = torch.get_rng_state()
    a = build_model(SPEC, images.input_shape, 3, torch_generator(5))
    b = build_model(SPEC, images.input_shape, 3, torch_generator(5))
    c = build_model(SPEC, images.input_shape, 3, torch_generator(6))
    assert torch.equal(torch.get_rng_state(), state)  # the user's default init drew nothing outside
    assert same(a.state_dict(), b.state_dict())
    assert not torch.equal(a.fc.weight, c.fc.weight)


def test_lazy_modules_are_initialised_from_the_init_seed(badpkg, images):
    spec = {"arch": "badpkg:lazy", "params": {}, "pythonpath": badpkg}
    state = torch.get_rng_state()
    a, b, c = (build_model(spec, images.input_shape, 3, torch_generator(s)) for s in (1, 1, 2))
    assert torch.equal(torch.get_rng_state(), state)
    assert a[1].weight.shape == (3, 144) and torch.equal(a[1].weight, b[1].weight)
    assert not torch.equal(a[1].weight, c[1].weight)


def test_user_dropout_is_replaced_by_seeded_dropout(images):
    model = build_model(SPEC, images.input_shape, 3, torch_generator(0))
    drops = [m for m in model.modules() if isinstance(m, (nn.Dropout, SeededDropout))]
    assert len(drops) == 1 and isinstance(drops[0], SeededDropout) and drops[0].p == 0.3
    assert "dropout.external_mask" not in model.state_dict()  # same state dict as the user's


def test_dropout_seed_changes_only_dropout(images):
    """control replicas are bitwise identical; dropout replicas differ, from the same initial
    weights and the same batches, and only through the masks: with p = 0 they are identical."""
    device = torch.device("cpu")
    state = torch.get_rng_state()
    c0, c1 = (replica_seeds("control", r, 0) for r in (0, 1))
    d0, d1 = (replica_seeds("dropout", r, 0) for r in (0, 1))
    assert {k for k, v in d0.as_dict().items() if v != d1.as_dict()[k]} == {"dropout"}

    def run(spec, s):
        return train_replica(TrainRun(spec, recipe(), device), s, images, Bookkeeping(log=lambda *_: None))["state"]

    assert same(run(SPEC, c0), run(SPEC, c1))
    assert not same(run(SPEC, d0), run(SPEC, d1))
    # nothing else changes: same initial model, and without dropout the same trained model
    assert same(
        build_replica(SPEC, recipe(), d0, images, device)[0].state_dict(),
        build_replica(SPEC, recipe(), d1, images, device)[0].state_dict(),
    )
    no_drop = {**SPEC, "params": {**SPEC["params"], "dropout": 0.0}}
    assert same(run(no_drop, d0), run(no_drop, d1))
    assert torch.equal(torch.get_rng_state(), state)


def test_other_stochastic_layers_draw_from_the_dropout_seed_per_step(badpkg):
    """nn.Dropout1d draws from the global RNG: forked and seeded per step from the dropout seed."""
    from nondet.io.formats import make_mnist1d

    data = from_arrays("mnist1d", make_mnist1d(seed=1, num_samples=300))
    spec = {"arch": "badpkg:noisy", "params": {}, "pythonpath": badpkg}
    r = recipe(augment="shift", augment_size=2, epochs=1)
    device = torch.device("cpu")
    state = torch.get_rng_state()
    run = lambda s: train_replica(TrainRun(spec, r, device), s, data, Bookkeeping(log=lambda *_: None))["state"]  # noqa: E731
    torch.manual_seed(123)  # the caller's global RNG must not matter
    a = run(replica_seeds("control", 0, 0))
    torch.manual_seed(456)
    assert same(a, run(replica_seeds("control", 1, 0)))
    assert not same(run(replica_seeds("dropout", 0, 0)), run(replica_seeds("dropout", 1, 0)))
    torch.set_rng_state(state)
    summary = check_model(spec, data.input_shape, 10, "noisy")
    assert summary["other_stochastic_layers"] == ["Dropout1d"] and summary["cka_on"] == "logits"


def test_features_come_from_the_named_module(images):
    model = build_model(SPEC, images.input_shape, 3, torch_generator(0)).eval()
    feats, logits = forward_with_features(model, images.x_test)
    assert feats.shape == (40, 8) and logits.shape == (40, 3)
    assert torch.equal(logits, model(images.x_test))
    assert torch.equal(feats, model.pool(model.body(images.x_test)))
    no_features = build_model({**SPEC, "features": None}, images.input_shape, 3, torch_generator(0))
    feats, logits = forward_with_features(no_features.eval(), images.x_test)
    assert torch.equal(feats, logits)


def test_cka_on_column():
    from nondet.analysis.metrics import cka_on

    assert cka_on(SPEC) == "features" and cka_on({**SPEC, "features": None}) == "logits"
    assert cka_on({"arch": "linear"}) == "logits" and cka_on({"arch": "cnn1d"}) == "features"


def test_bitflip_lands_in_a_user_weight_or_the_named_tensor(images):
    from nondet.training.bitflip import apply_bitflip

    a = build_model(SPEC, images.input_shape, 3, torch_generator(0))
    flipped = apply_bitflip(a, 3, "fc.weight")
    b = build_model(SPEC, images.input_shape, 3, torch_generator(0))
    diff = [k for k in a.state_dict() if not torch.equal(a.state_dict()[k], b.state_dict()[k])]
    assert flipped["tensor"] == "fc.weight" and diff == ["fc.weight"]
    assert (a.fc.weight != b.fc.weight).sum() == 1


# --- one error per bad model, with its message -----------------------------------------------------


@pytest.mark.parametrize(
    "arch, params, features, message",
    [
        ("nosuchpkg.models:build", {}, None, r"cannot import module 'nosuchpkg.models'"),
        ("badpkg:missing", {}, None, r"module 'badpkg' has no attribute 'missing'"),
        ("brokenimport:build", {}, None, r"importing module 'brokenimport' failed: SyntaxError"),
        ("badpkg:NOT_CALLABLE", {}, None, r"'badpkg:NOT_CALLABLE' is not callable \(it is a int\)"),
        ("badpkg:not_a_module", {}, None, r"returned a str, not an nn.Module"),
        ("badpkg:wrong_shape", {}, None, r"forward returned \(2, 4\) for a batch of 2; expected .*\(2, 3\)"),
        (
            "badpkg:fixed",
            {"depth": 3},
            None,
            r"does not accept params \['depth'\].*takes \(input_shape, num_classes, width\)",
        ),
        ("badpkg:fixed", {}, "body", r"features 'body' is not a submodule \(its modules: 0, 1\)"),
        ("badpkg:crashes", {}, None, r"forward pass on inputs of shape \(2, 1, 12, 12\) failed: RuntimeError"),
    ],
)
def test_bad_model_fails_check_with_its_message(badpkg, arch, params, features, message):
    spec = {"arch": arch, "params": params, "features": features, "pythonpath": badpkg}
    with pytest.raises(ModelError, match=message) as e:
        check_model(spec, (1, 12, 12), 3, "mine")
    assert str(e.value).startswith(f"model mine ({arch}): ")


def test_dropout_condition_needs_a_dropout_layer(badpkg):
    spec = {"arch": "badpkg:fixed", "params": {}, "pythonpath": badpkg}
    with pytest.raises(ModelError, match="condition 'dropout' needs an nn.Dropout with p > 0"):
        check_model(spec, (1, 12, 12), 3, "mine", conditions=["control", "dropout"])
    with pytest.raises(ModelError, match="bitflip_tensor 'nope' is not a parameter"):
        check_model(spec, (1, 12, 12), 3, "mine", bitflip_tensor="nope")


def config_with(model: dict) -> dict:
    return {"models": {"mine": {"conditions": ["control", "init"], **model}}}


@pytest.mark.parametrize(
    "model, message",
    [
        ({"arch": "mypkg/models.py"}, r"models.mine.arch: 'mypkg/models.py' is neither a built-in"),
        ({"arch": "resnet18"}, r"models.mine.arch: 'resnet18' is neither a built-in architecture"),
        (
            {"arch": "nosuchpkg_xyz.models:build"},
            r"models.mine.arch: model 'mine': module 'nosuchpkg_xyz' .* is found neither on PYTHONPATH",
        ),
        (
            {"arch": "mypkg.models:build", "pythonpath": "no/such/folder"},
            r"models.mine.pythonpath: folder 'no/such/folder' not found",
        ),
        ({"arch": "cnn1d", "features": "body"}, r"models.mine.features: only for a user model"),
    ],
)
def test_bad_model_config_fails_at_planning_time(model, message):
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.validate(config_with(model))


def test_user_model_config_and_job_spec(monkeypatch):
    monkeypatch.chdir(REPO)
    c = cfg.validate(
        config_with(
            {"arch": "mypkg.models:build", "pythonpath": "examples", "params": {"channels": 8}, "features": "pool"}
        )
    )
    assert plan.model_spec(c, "mine") == {
        "arch": "mypkg.models:build",
        "params": {"channels": 8},
        "features": "pool",
        "pythonpath": "examples",
    }
    assert plan.user_models(c) == ["mine"]
    c["comparisons"] = {"wide": {"model": "mine", "candidate": {"params": {"channels": 16}}}}
    c = cfg.validate(c)
    job = plan.comparison_job(c, "wide", "candidate", 0)
    assert job["model_spec"]["params"] == {"channels": 16}
