"""One diverged-replica policy (config metrics.on_diverged, nondet.io.files.kept_replicas) for every
stage that reads predictions: each stage, given a predictions file with a diverged replica,
drops it under exclude (and logs it) and stops naming the group and replica under fail."""

import copy

import numpy as np
import pytest
from helpers import default_config

from nondet.io.files import kept_replicas
from nondet.io.h5io import InputError, atomic_h5
from nondet.io.runs import import_group
from nondet.workflow import analysis_stages, compare_stages, expect
from nondet.workflow import config as cfg
from nondet.workflow.compare_stages import runs_all_pairs
from nondet.workflow.runs import compare_params as runs_compare_params

N, K, DIVERGED = 60, 3, 2  # test examples, classes, the replica whose loss became NaN
LABELS = np.arange(N) % K


def fake_predictions(path, shift=0.0, replicas=(0, 1, 2, 3), diverged=DIVERGED):
    """A predictions file as the predict stage writes it, replica ``diverged`` marked diverged."""
    rng = np.random.default_rng(len(str(path)))
    m = len(replicas)
    logits = rng.normal(size=(m, N, K)) + 2.0 * np.eye(K)[LABELS] + shift
    job = {"experiment": "t", "data_hash": "h", "recipe": {"epochs": 1, "cycles": 1}}
    with atomic_h5(path, {"kind": "predict", "data_hash": "h", "job": job, "device": "cpu"}) as f:
        f.create_dataset("logits", data=logits.astype(np.float32))
        f.create_dataset("features", data=rng.normal(size=(m, N, 4)).astype(np.float32))
        f.create_dataset("labels", data=LABELS)
        f.create_dataset("replicas", data=list(replicas))
        f.create_dataset("diverged", data=[r == diverged for r in replicas])
        f.attrs["kernels_mode"] = "deterministic"
    return path


COMPARE = {
    "name": "c",
    "baseline": "baseline",
    "candidate": "candidate",
    "paired_by": None,
    "alpha": 0.05,
    "power": 0.8,
    "effect": {},
    "gamma": 0.75,
    "margin": {},
    "margin_kind": "equivalence",
    "held_fixed": "test",
}


def run_stage(name, tmp_path, on_diverged):
    """Run stage ``name`` on predictions holding diverged replica 2; returns its log text."""
    pred = fake_predictions(tmp_path / "pred.h5")
    log = tmp_path / f"{name}.log"
    if name == "metrics":
        params = {"model": "m", "condition": "c", "bootstrap_resamples": 20, "seed": 0}
        analysis_stages.metrics([pred], tmp_path / "m.h5", {**params, "on_diverged": on_diverged}, log)
    elif name == "ensembles":
        params = {"model": "m", "condition": "c", "on_diverged": on_diverged}
        analysis_stages.ensembles([pred], tmp_path / "e.h5", params, log)
    elif name == "compare":
        other = fake_predictions(tmp_path / "other.h5", shift=0.1, replicas=(4, 5, 6), diverged=None)
        out = {k: tmp_path / f"c.{k}" for k in ("csv", "verdict", "md", "plan", "pdf", "png")}
        compare_stages.compare([pred], [other], out, {**COMPARE, "on_diverged": on_diverged}, log)
    elif name == "all_pairs":
        other = fake_predictions(tmp_path / "other.h5", shift=0.1, replicas=(4, 5, 6), diverged=None)
        params = {"alpha": 0.05, "on_diverged": on_diverged}
        runs_all_pairs({"g": pred, "h": other}, tmp_path / "p.csv", params, log)
    elif name == "factorial":
        params = {
            "name": "f",
            "sources": ["init", "shuffle"],
            "levels": [2, 2],
            "cells": [[0, 0], [0, 1], [1, 0], [1, 1]],
            "bootstrap_resamples": 10,
            "seed": 0,
            "on_diverged": on_diverged,
        }
        compare_stages.factorial([pred], tmp_path / "f.csv", tmp_path / "f.pdf", tmp_path / "f.png", params, log)
    return log.read_text()


STAGES = ["metrics", "ensembles", "compare", "all_pairs", "factorial"]
GROUP = {"metrics": "m/c", "ensembles": "m/c", "compare": "baseline", "all_pairs": "g", "factorial": "f"}


@pytest.mark.parametrize("name", STAGES)
def test_fail_stops_the_stage_naming_group_and_replica(name, tmp_path):
    with pytest.raises(InputError, match=rf"^{GROUP[name]}: 1 replica\(s\) diverged \(loss NaN/inf\): 2;"):
        run_stage(name, tmp_path, "fail")


@pytest.mark.slow
@pytest.mark.parametrize("name", [s for s in STAGES if s != "factorial"])
def test_exclude_drops_the_replica_and_logs_it(name, tmp_path):
    text = run_stage(name, tmp_path, "exclude")
    assert f"{GROUP[name]}: EXCLUDING 1 diverged replica(s): 2" in text
    if name == "metrics":
        from nondet.io.files import load_rows

        (row,) = load_rows([tmp_path / "m.h5"])
        assert row["n_replicas"] == 3 and row["n_diverged"] == 1
    if name == "ensembles":
        import h5py

        with h5py.File(tmp_path / "e.h5") as f:
            assert sorted(f["k1"]["members"][()].ravel()) == [0, 1, 3]
    if name == "compare":
        import pandas as pd

        assert set(pd.read_csv(tmp_path / "c.csv")["n_baseline"].dropna()) == {3}


def test_factorial_excludes_then_stops_a_design_cannot_lose_a_cell(tmp_path):
    with pytest.raises(InputError, match="leave holes in the factorial design"):
        run_stage("factorial", tmp_path, "exclude")
    assert "f: EXCLUDING 1 diverged replica(s): 2" in (tmp_path / "factorial.log").read_text()


def test_policy_function():
    diverged, replicas = np.array([False, True, False, True]), np.array([7, 8, 9, 10])
    lines = []
    keep = kept_replicas(diverged, replicas, "g", "exclude", lines.append)
    assert keep.tolist() == [True, False, True, False] and lines == ["g: EXCLUDING 2 diverged replica(s): 8, 10"]
    assert kept_replicas(~diverged & False, replicas, "g", "fail").all()  # nothing diverged: nothing to do
    with pytest.raises(InputError, match=r"g: 2 replica\(s\) diverged \(loss NaN/inf\): 8, 10"):
        kept_replicas(diverged, replicas, "g", "fail")
    with pytest.raises(ValueError, match="exclude or fail"):
        kept_replicas(diverged, replicas, "g", "drop")


def npy_group(folder) -> dict:
    """Two imported runs as .npy logits and their labels: a runs.groups entry."""
    folder.mkdir()
    for i in range(2):
        np.save(folder / f"run{i}.npy", 2.0 * np.eye(K)[LABELS] + i + 0.5)
    np.save(folder / "labels.npy", LABELS)
    return {"predictions": str(folder / "run*.npy"), "labels": str(folder / "labels.npy")}


def test_every_rule_gets_on_diverged_from_the_config(tmp_path):
    """The params of every stage above carry the config's value (no stage falls back on its own)."""
    runs = {g: npy_group(tmp_path / g) for g in ("a", "b")}
    for value in ("exclude", "fail"):
        c = copy.deepcopy(default_config())
        c["metrics"]["on_diverged"] = value
        c["comparisons"] = {"x": {"model": "cnn", "candidate": {"training": {"lr": 0.1}}}}
        c["factorial"] = {"f": {"model": "cnn", "sources": ["init", "shuffle"], "levels": 2}}
        c["runs"] = {"groups": runs, "comparisons": {"ab": {"baseline": "a", "candidate": "b"}}, "all_pairs": True}
        c = cfg.validate(c)
        got = [
            expect.metrics_params(c, "cnn", "all"),
            expect.metrics_params(c, "cnn", "all", "tta"),
            expect.runs_metrics_params(c, "runs", "a"),
            expect.ensembles_params(c, "cnn", "all"),
            expect.compare_params(c, "x"),
            expect.factorial_params(c, "f"),
            runs_compare_params(c, "ab", "v"),
        ]
        assert [p["on_diverged"] for p in got] == [value] * len(got)
    assert c["runs"]["all_pairs_alpha"] == 0.05  # rule runs_all_pairs: its alpha, from the schema


@pytest.mark.slow
def test_imported_groups_hold_no_diverged_runs(tmp_path):
    """Why all_pairs' old silent drop never fired: imports mark every run as converged."""
    spec = cfg.validate({"models": {}, "runs": {"groups": {"g": npy_group(tmp_path / "g")}}})
    import_group(spec["runs"]["groups"]["g"], "g", tmp_path / "g.h5", log=lambda *_: None)
    from nondet.io.files import load_predictions

    assert not load_predictions([tmp_path / "g.h5"])["diverged"].any()
