"""The protocol's guarantees on any CPU: absorbed one-ulp flips are counted, never assumed away;
prediction always runs deterministic fp32 kernels."""

import dataclasses
import json

import h5py
import numpy as np
import pytest

import nondet.training.replica as training
from nondet.analysis import identical
from nondet.analysis.tables import COLUMNS, diversity_frame, table_notes
from nondet.io import files
from nondet.seeds import replica_seeds
from nondet.workflow import analysis_stages, plan, torch_stages
from nondet.workflow import config as cfg

pytestmark = pytest.mark.slow  # every test here starts a subprocess

#: The statistics columns of a diversity row (device ... cka)
STATS = COLUMNS[COLUMNS.index("device") : COLUMNS.index("cka") + 1]


def _job(tmp_path, condition="bitflip", **top):
    c = cfg.validate(
        {
            "replicas": 3,
            "replicas_per_job": 3,
            "dataset": {"num_samples": 600},
            "training": {"epochs": 1, "eval_every": 0},
            "models": {"lin": {"arch": "linear", "conditions": ["control", "bitflip", "init"]}},
            **top,
        }
    )
    data = tmp_path / "d.h5"
    if not data.exists():
        analysis_stages.dataset(data, plan.data_spec(c), plan.data_hash(c))
    return data, plan.train_job(c, "lin", condition, 0)


def test_train_stage_records_absorbed_flips_against_its_own_reference(tmp_path, monkeypatch):
    """Bookkeeping with a planted outcome: replicas 0 and 2 end bitwise equal to the unperturbed
    run, replica 1 keeps its flip (lr 0: nothing moves, so it provably survives)."""
    real = training.train_replica
    calls = []

    def fake(run, seeds, *args, **kwargs):
        still = dataclasses.replace(run, recipe={**run.recipe, "lr": 0.0})
        res = real(still, seeds, *args, **kwargs)
        calls.append(seeds)
        if seeds.bitflip is not None and seeds != replica_seeds("bitflip", 1, 0):
            ref = real(still, replica_seeds("control", 0, 0), *args)
            res["state"] = ref["state"]
        return res

    monkeypatch.setattr(torch_stages, "train_replica", fake)
    data, job = _job(tmp_path)
    torch_stages.train(data, tmp_path / "t.h5", job, checkpoint_every=0)
    assert calls[-1] == replica_seeds("control", 0, 0)  # the reference: same seeds, no flip
    assert [r["absorbed"] for r in files.load_replicas(tmp_path / "t.h5")] == [1, 0, 1]
    torch_stages.predict(data, tmp_path / "t.h5", tmp_path / "p.h5", job)
    analysis_stages.metrics(
        [tmp_path / "p.h5"],
        tmp_path / "m.h5",
        {"model": "lin", "condition": "bitflip", "bootstrap_resamples": 20, "seed": 0, "on_diverged": "exclude"},
    )
    (row,) = files.load_rows([tmp_path / "m.h5"])
    assert row["n_absorbed"] == 2
    assert row["n_identical_pairs"] == 1  # replicas 0 and 2 both equal the unperturbed run
    df = diversity_frame([row])
    assert table_notes(df) == [
        "lin/bitflip: 2 of 3 one-ulp flips absorbed (final weights bitwise equal to the unperturbed "
        "run with the same seeds); they add no diversity.",
        "WARNING lin/bitflip: 1 of 3 pairs of replicas have bitwise identical test logits; this "
        "source produced no diversity between them on this device.",
    ]


def test_absorbed_count_matches_an_independent_unperturbed_run(tmp_path):
    """Real training: whatever this CPU's rounding does, the recorded flags are exactly bitwise
    equality with a separately trained control replica (same machine, same seeds)."""
    data, job = _job(tmp_path)
    torch_stages.train(data, tmp_path / "b.h5", job, checkpoint_every=0)
    _, control = _job(tmp_path, "control")
    torch_stages.train(data, tmp_path / "c.h5", {**control, "replicas": [0]}, checkpoint_every=0)
    ref = files.load_replicas(tmp_path / "c.h5")[0]["weights"]
    flipped = files.load_replicas(tmp_path / "b.h5")
    assert [r["absorbed"] for r in flipped] == [int(torch_stages.same_weights(r["weights"], ref)) for r in flipped]
    assert all(r["bitflip"]["target"] == "any conv/linear weight" for r in flipped)


def test_no_flip_means_no_absorption_check(tmp_path):
    data, job = _job(tmp_path, "init")
    torch_stages.train(data, tmp_path / "i.h5", job, checkpoint_every=0)
    assert {r["absorbed"] for r in files.load_replicas(tmp_path / "i.h5")} == {-1}
    assert np.isnan(identical.absorbed_count(np.array([-1, -1])))
    assert identical.absorbed_count(np.array([0, 1, 1], dtype=np.int8)) == 2
    df = diversity_frame(
        [
            {**r, "model": "m", "condition": c, "n_absorbed": k}
            for c, k, r in (("init", np.nan, {}), ("bitflip", 0, {}))
            for r in [dict.fromkeys(STATS, 4)]
        ]
    )
    assert table_notes(df) == [
        "m/bitflip: 0 of 4 one-ulp flips absorbed (final weights bitwise equal to the unperturbed "
        "run with the same seeds); every flip changed the trained model."
    ]


def test_bitflip_tensor_is_recorded_and_a_wrong_name_fails_before_training(tmp_path):
    data, job = _job(tmp_path, training={"epochs": 1, "eval_every": 0, "bitflip_tensor": "fc.weight"})
    torch_stages.train(data, tmp_path / "f.h5", job, checkpoint_every=0)
    reps = files.load_replicas(tmp_path / "f.h5")
    assert {r["bitflip"]["tensor"] for r in reps} == {"fc.weight"}
    assert reps[0]["job"]["recipe"]["bitflip_tensor"] == "fc.weight"  # in the provenance
    with h5py.File(tmp_path / "f.h5") as f:  # the hardware of the replicas (on CUDA: GPU name and capability)
        assert json.loads(f.attrs["provenance"])["accelerator"] == {"name": "cpu"}
    with pytest.raises(cfg.ConfigError, match="'conv1.weight' is not a parameter of model 'lin'"):
        _job(tmp_path, training={"epochs": 1, "bitflip_tensor": "conv1.weight"})  # the config check
    bad = {**job, "recipe": {**job["recipe"], "bitflip_tensor": "conv1.weight"}}  # a job made by hand
    with pytest.raises(ValueError, match="'conv1.weight' is not a parameter of the model.*fc.weight"):
        torch_stages.train(data, tmp_path / "x.h5", bad, checkpoint_every=0)
    assert not (tmp_path / "x.h5").exists()


def test_predict_sets_deterministic_fp32_kernels_before_any_forward(tmp_path, monkeypatch):
    import torch

    data, job = _job(tmp_path, "init")
    torch_stages.train(data, tmp_path / "i.h5", job, checkpoint_every=0)
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.conv.fp32_precision = "tf32"  # as left by a nondeterministic job
    calls, real = [], training.set_kernel_mode

    def spy(deterministic, device):
        calls.append(deterministic)
        real(deterministic, device)

    monkeypatch.setattr(torch_stages, "set_kernel_mode", spy)
    torch_stages.predict(data, tmp_path / "i.h5", tmp_path / "p.h5", job)
    assert calls == [True]
    assert torch.are_deterministic_algorithms_enabled()
    # TF32 off, read through both APIs (set through the legacy flags, see set_kernel_mode)
    assert torch.backends.cudnn.conv.fp32_precision != "tf32"
    assert torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"


def test_identical_pairs_and_the_warnings_they_raise():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 50, 3)).astype(np.float32)
    assert identical.identical_pairs(z) == 0
    z[2] = z[0]
    z[3] = z[0]
    assert identical.identical_pairs(z) == 3  # (0,2), (0,3), (2,3)
    base = dict.fromkeys(STATS, 0.0)
    rows = [
        {**base, "model": "m", "condition": c, "n_replicas": 4, "n_identical_pairs": k}
        for c, k in (("control", 6), ("kernels", 0), ("all", 2))
    ]
    assert table_notes(diversity_frame(rows)) == [
        "WARNING m/all: 2 of 6 pairs of replicas have bitwise identical test logits; this source "
        "produced no diversity between them on this device."
    ]
    rows[0]["n_identical_pairs"] = 5
    assert table_notes(diversity_frame(rows))[0].startswith("WARNING m/control: only 5 of 6 pairs")


def test_vectorised_bitflip_job_checks_absorption_like_the_sequential_one(tmp_path):
    """The unperturbed reference rides along in the vmap batch; for a matmul model vectorised
    and sequential training agree bitwise, so the flags must agree too."""
    data, job = _job(tmp_path)
    torch_stages.train(data, tmp_path / "seq.h5", job, checkpoint_every=0)
    torch_stages.train(data, tmp_path / "vec.h5", {**job, "vectorize": "on"}, tmp_path / "vec.log", checkpoint_every=0)
    assert "4 runs together" in (tmp_path / "vec.log").read_text()
    seq, vec = files.load_replicas(tmp_path / "seq.h5"), files.load_replicas(tmp_path / "vec.h5")
    assert [r["absorbed"] for r in vec] == [r["absorbed"] for r in seq]
    assert all(torch_stages.same_weights(a["weights"], b["weights"]) for a, b in zip(vec, seq))
