"""A researcher's own training script (nondet.workflow.script): the determinism audit, the checks of what
the script writes and their messages, the job specs that decide reruns, and nondet.training.sources.
The scripts are tests/own_scripts.py (they draw logits, they do not train): about 10 s in all."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from nondet.io.files import load_predictions
from nondet.training.sources import Sources
from nondet.workflow import analysis_stages, expect, plan
from nondet.workflow import config as cfg
from nondet.workflow.script import ScriptError, audit_script, train_script

HERE = str(Path(__file__).parent)


def make_config(train="own_scripts:honest", conditions=("control", "init", "shuffle", "data"), **model):
    return cfg.validate(
        {
            "replicas": 2,
            "replicas_per_job": 2,
            "dataset": {"name": "mnist1d", "num_samples": 300},
            "models": {"s": {"train": train, "pythonpath": HERE, "conditions": list(conditions), **model}},
        }
    )


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    c = make_config()
    path = tmp_path_factory.mktemp("data") / "mnist1d.h5"
    analysis_stages.dataset(path, plan.data_spec(c), plan.data_hash(c))
    return path


def audit(tmp_path, data_file, **kw):
    c = make_config(**kw)
    out, log = tmp_path / "audit.json", tmp_path / "audit.log"
    audit_script(data_file, out, plan.audit_job(c, "s"), log)
    return json.loads(out.read_text()), log.read_text()


@pytest.mark.slow
def test_audit_passes_an_honest_script(tmp_path, data_file):
    report, _ = audit(tmp_path, data_file)
    assert report["repeatable"] and not report["problems"]
    assert report["sources"] == {"init": "honoured", "shuffle": "honoured", "data": "honoured"}


@pytest.mark.slow
def test_audit_catches_a_script_that_draws_from_the_global_rng(tmp_path, data_file):
    with pytest.raises(ScriptError, match="control replicas differ.*global RNG") as e:
        audit(tmp_path, data_file, train="own_scripts:global_rng")
    assert "audit.log" in str(e.value) and "models.s.audit: warn" in str(e.value)


@pytest.mark.slow
def test_audit_catches_a_script_that_ignores_a_seed(tmp_path, data_file):
    with pytest.raises(ScriptError, match="ignores the `shuffle` seed"):
        audit(tmp_path, data_file, train="own_scripts:ignores_shuffle")
    report, log = audit(tmp_path, data_file, train="own_scripts:ignores_shuffle", audit="warn")
    assert report["sources"]["shuffle"] == "ignored" and report["sources"]["init"] == "honoured"
    assert "ignores the `shuffle` seed" in log


@pytest.mark.parametrize(
    "script, message",
    [
        ("crashes", r"raised RuntimeError: CUDA out of memory \(pretend\)"),
        ("writes_nothing", "wrote nothing at"),
        ("wrong_shape", r"logits have shape \(60, 3\); expected \(n_test, num_classes\) = \(60, 10\)"),
        ("nan_logits", "NaN/inf logits in 1 of 60 test examples"),
    ],
)
@pytest.mark.slow
def test_a_failing_script_is_named_with_its_replica_and_log(tmp_path, data_file, script, message):
    c = make_config(train=f"own_scripts:{script}")
    log = tmp_path / "train.log"
    with pytest.raises(ScriptError, match=message) as e:
        train_script(data_file, tmp_path / "p.h5", plan.train_job(c, "s", "init", 0), log)
    assert str(e.value).startswith("model s replica 0 (init): ") and str(log) in str(e.value)
    assert not (tmp_path / "p.h5").exists()


@pytest.mark.slow
def test_a_failing_command_is_named_with_its_replica_and_log(tmp_path, data_file):
    c = cfg.validate(
        {
            **make_config(),
            "models": {
                "s": {
                    "command": f"{sys.executable} -c 'import sys; print(\"boom\"); sys.exit(3)' {{out}}",
                    "conditions": ["control", "init"],
                }
            },
        }
    )
    log = tmp_path / "train.log"
    with pytest.raises(ScriptError, match=r"model s replica 0 \(init\): the command exited with status 3 \(boom\)"):
        train_script(data_file, tmp_path / "p.h5", plan.train_job(c, "s", "init", 0), log)
    assert "| boom" in log.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("script", ["honest", "as_torch_file", "as_hdf5_file"])
def test_script_outputs_become_the_predict_stages_file(tmp_path, data_file, script):
    c = make_config(train=f"own_scripts:{script}")
    job = plan.train_job(c, "s", "init", 0)
    out = tmp_path / "p.h5"
    train_script(data_file, out, job, tmp_path / "train.log")
    pred = load_predictions([out], [expect.predict_expect(c, "s", "init", 0)])
    assert pred["logits"].shape == (2, 60, 10) and len(pred["labels"]) == 60
    assert not np.array_equal(pred["logits"][0], pred["logits"][1])  # init varies
    assert pred["cka_on"] == ("features" if script == "as_torch_file" else "logits")


@pytest.mark.slow
def test_control_replicas_of_a_script_are_bitwise_identical_and_data_changes_the_set(tmp_path, data_file):
    c = make_config()
    for condition in ("control", "data"):
        train_script(data_file, tmp_path / f"{condition}.h5", plan.train_job(c, "s", condition, 0))
    control = load_predictions([tmp_path / "control.h5"])
    data = load_predictions([tmp_path / "data.h5"])
    assert np.array_equal(control["logits"][0], control["logits"][1])
    assert not np.array_equal(data["logits"][0], data["logits"][1])
    assert np.array_equal(control["labels"], data["labels"])  # the same test set


def test_job_specs_rerun_exactly_the_script_jobs_that_changed(tmp_path, monkeypatch):
    """Editing a script's params or its file changes its jobs' spec hashes, nobody else's."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("print(1)\n")
    base = {
        "replicas": 2,
        "models": {
            "cmd": {
                "command": "python train.py --seeds {seeds_json} --out {out}",
                "conditions": ["init"],
                "params": {"lr": 0.1},
            },
            "lin": {"arch": "linear", "conditions": ["init"]},
        },
    }
    hashes = lambda c: {m: plan.train_job(cfg.validate(c), m, "init", 0)["spec_hash"] for m in ("cmd", "lin")}  # noqa: E731
    before = hashes(base)
    assert plan.train_job(cfg.validate(base), "cmd", "init", 0)["model_spec"]["files"].keys() == {"train.py"}
    edited = json.loads(json.dumps(base))
    edited["models"]["cmd"]["params"]["lr"] = 0.2
    after = hashes(edited)
    assert after["cmd"] != before["cmd"] and after["lin"] == before["lin"]
    (tmp_path / "train.py").write_text("print(2)\n")
    assert hashes(base)["cmd"] != before["cmd"] and hashes(base)["lin"] == before["lin"]
    # nor does a change of our recipe move a script's job
    other = {**base, "training": {"lr": 0.05}}
    assert hashes(other)["cmd"] == hashes(base)["cmd"] and hashes(other)["lin"] != hashes(base)["lin"]


@pytest.mark.parametrize(
    "model, key",
    [
        ({"arch": "linear", "train": "a.b:c"}, "models.s: give exactly one of arch"),
        ({}, "models.s: give exactly one of arch"),
        ({"train": "not a path"}, "models.s.train"),
        ({"train": "a.b:c", "features": "pool"}, "models.s.features"),
        ({"arch": "linear", "audit": "warn"}, "models.s.audit"),
        ({"arch": "linear", "timeout": 60}, "models.s.timeout"),
        ({"command": "true", "timeout": 0}, "models.s.timeout"),
    ],
)
def test_script_model_config_errors_name_the_key(model, key):
    with pytest.raises(cfg.ConfigError, match=key.replace(".", r"\.")):
        cfg.validate({"models": {"s": {"conditions": ["init"], **model}}})
    with pytest.raises(cfg.ConfigError, match="divergence.models"):
        cfg.validate({"models": {"s": {"command": "true", "conditions": ["init"]}}, "divergence": {"models": ["s"]}})


# --- nondet.training.sources: each source's few lines, in a DataLoader with workers ------------------------


class Noise:
    """A transform that draws from the global torch RNG, as torchvision's v2 transforms do."""

    def __call__(self, x):
        return x + torch.rand(x.shape)


def epoch_batches(src, n=40, workers=2, epochs=2):
    ds = src.augmented(TensorDataset(torch.zeros(n, 3), torch.arange(n)), Noise())
    loader = DataLoader(ds, batch_size=8, sampler=src.sampler(n, 8, keyed=True), num_workers=workers)
    out = []
    for _ in range(epochs):
        xs, index = [], []
        for x, _, i in loader:
            xs.append(x)
            index.append(i)
        out.append((torch.cat(index), torch.cat(xs)))
    return out


def by_example(index, x):
    return x[torch.argsort(index)]


def test_augmentation_per_example_is_the_same_with_workers_and_another_order():
    """An example's augmentation depends on (augment seed, epoch, index) alone: not on the number
    of DataLoader workers, nor on the shuffle seed; it changes with the epoch. ~3 s (workers)."""
    a = epoch_batches(Sources.for_replica("control", 0), workers=2)
    b = epoch_batches(Sources.for_replica("control", 0), workers=0)
    c = epoch_batches(Sources.for_replica("shuffle", 1), workers=0)
    assert all(torch.equal(ia, ib) and torch.equal(xa, xb) for (ia, xa), (ib, xb) in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])  # another order ...
    assert torch.equal(by_example(*a[0]), by_example(*c[0]))  # ... the same augmentations
    assert not torch.equal(by_example(*a[0]), by_example(*a[1]))  # new ones next epoch
    d = epoch_batches(Sources.for_replica("augment", 1), workers=0)
    assert torch.equal(a[0][0], d[0][0]) and not torch.equal(a[0][1], d[0][1])


def test_sources_api_init_flip_dropout_and_standin():
    def build(src):
        with src.init():
            return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2))

    state = torch.random.get_rng_state()
    a, b = build(Sources.for_replica("control", 0)), build(Sources.for_replica("control", 1))
    c = build(Sources.for_replica("init", 1))
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's global RNG untouched
    assert torch.equal(a[0].weight, b[0].weight) and not torch.equal(a[0].weight, c[0].weight)
    flip = Sources.for_replica("bitflip", 0)
    flipped = build(flip)
    assert flip.flip(flipped)["tensor"] in ("0.weight", "2.weight") and Sources.for_replica("control", 0).flip(a) == {}
    assert sum(int((p != q).sum()) for p, q in zip(a.parameters(), flipped.parameters())) == 1
    # per-example dropout: an example's mask depends on (seed, epoch, index), not its batch row
    src = Sources.for_replica("control", 0)
    src.dropout(a, n=10)
    a.train()
    x = torch.ones(2, 4)
    src.select(0, [3, 7])
    y1 = a(x)
    src.select(0, [7, 3])
    y2 = a(x)
    assert torch.equal(y1, y2.flip(0))
    # the CPU kernels stand-in: the same batches, rows permuted within each
    plain = Sources.for_replica("control", 0).sampler(32, batch_size=8).order(0)
    kern = Sources.for_replica("kernels", 1).sampler(32, batch_size=8).order(0)
    assert not torch.equal(plain, kern)
    assert all(torch.equal(p.sort().values, k.sort().values) for p, k in zip(plain.split(8), kern.split(8)))
    # data: the sampler draws from the replica's resample only
    data = Sources.for_replica("data", 0)
    assert set(data.sampler(50).order(0).tolist()) == set(data.train_index(50).tolist()) != set(range(50))


def test_step_rng_keys_functional_and_attention_dropout_by_seed_and_step():
    """``with src.step_rng(step):`` the global-RNG draws of F.dropout and nn.MultiheadAttention's
    dropout (training mode) are a function of (dropout seed, step) alone; the caller's global RNG
    is left as it was."""
    attention = torch.nn.MultiheadAttention(8, 2, dropout=0.5, batch_first=True).train()
    x = torch.ones(2, 5, 8)

    def draw(src, step):
        with src.step_rng(step):
            return torch.nn.functional.dropout(x, 0.5, training=True), attention(x, x, x)[0]

    state = torch.get_rng_state()
    a = draw(Sources.for_replica("control", 0), 3)
    b = draw(Sources.for_replica("control", 1), 3)  # another replica, the same dropout seed
    other_step = draw(Sources.for_replica("control", 0), 4)
    other_seed = draw(Sources.for_replica("dropout", 1), 3)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's global RNG untouched
    assert Sources.for_replica("control", 0).seed("dropout") != Sources.for_replica("dropout", 1).seed("dropout")
    for i in range(2):  # 0: F.dropout, 1: attention output (dropout on its weights)
        assert torch.equal(a[i], b[i])
        assert not torch.equal(a[i], other_step[i]) and not torch.equal(a[i], other_seed[i])
    assert (a[0] == 0).any() and (a[0] != 0).any()  # the masks do drop, at p = 0.5


@pytest.mark.slow
def test_a_comparison_of_two_script_recipes_trains_each_arm_with_its_params(tmp_path, data_file):
    c = cfg.validate(
        {
            **make_config(),
            "comparisons": {
                "lr": {
                    "model": "s",
                    "condition": "init",
                    "replicas": 2,
                    "baseline": {"params": {"lr": 0.1}},
                    "candidate": {"params": {"lr": 0.2}},
                }
            },
        }
    )
    expected = expect.comparison_expect(c, "lr")
    for arm in ("baseline", "candidate"):
        job = plan.comparison_job(c, "lr", arm, 0)
        assert job["model_spec"]["params"] == {"lr": 0.1 if arm == "baseline" else 0.2}
        train_script(data_file, tmp_path / f"{arm}.h5", job)
        assert load_predictions([tmp_path / f"{arm}.h5"], expected[arm])["logits"].shape == (2, 60, 10)


def test_a_script_folder_is_hashed_whole(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "train.py").write_text("def main(ctx): pass\n")
    (tmp_path / "pkg" / "helpers.py").write_text("A = 1\n")
    c = {
        "replicas": 2,
        "models": {"s": {"train": "pkg.train:main", "pythonpath": ".", "script": "pkg", "conditions": ["init"]}},
    }
    spec = lambda: plan.train_job(cfg.validate(c), "s", "init", 0)["model_spec"]["files"]  # noqa: E731
    before = spec()
    assert set(before) == {"pkg", "pkg/train.py"}
    (tmp_path / "pkg" / "helpers.py").write_text("A = 2\n")
    after = spec()
    assert after["pkg"] != before["pkg"] and after["pkg/train.py"] == before["pkg/train.py"]
