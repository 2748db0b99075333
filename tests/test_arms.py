"""The one per-example loader of every comparison (nondet.analysis.arms.per_example_arms)."""

import h5py
import numpy as np
import pytest

from nondet.analysis.arms import per_example_arms
from nondet.analysis.variance import per_example_values
from nondet.io import h5io
from nondet.io.h5io import InputError
from nondet.io.runs import import_group

N, K = 30, 3


@pytest.fixture(autouse=True)
def no_git(monkeypatch):
    """Provenance asks git for the commit (a subprocess); these files need none."""
    monkeypatch.setattr(h5io, "_git_commit", lambda: "test")


def group(tmp_path, name, logits, labels):
    """An imported group's predictions file (the same HDF5 kind the predict stage writes)."""
    d = tmp_path / name
    d.mkdir()
    for i, z in enumerate(logits):
        np.save(d / f"run{i}.npy", z)
    np.save(d / "labels.npy", labels)
    out = tmp_path / f"{name}.h5"
    spec = {"predictions": str(d / "run*.npy"), "labels": str(d / "labels.npy")}
    import_group(spec, name, out, log=lambda *_: None)
    return out


def runs(seed, m=3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, N)
    return rng.normal(0, 1, (m, N, K)).astype(np.float32), labels


def test_values_and_names_of_every_arm_and_the_diverged_policy(tmp_path):
    logits, labels = runs(0)
    paths = {"a": [group(tmp_path, "a", logits, labels)], "b": [group(tmp_path, "b", logits[::-1] + 1, labels)]}
    values, names = per_example_arms(paths, "fail")
    assert names == {"a": ["replica 0", "replica 1", "replica 2"], "b": ["replica 0", "replica 1", "replica 2"]}
    expected = per_example_values(logits, labels)
    assert values["a"].keys() == expected.keys()
    for metric in expected:
        assert np.array_equal(values["a"][metric], expected[metric])
    with h5py.File(paths["b"][0], "r+") as f:  # replica 1 of b diverged
        f["diverged"][1] = True
    told = []
    values, names = per_example_arms(paths, "exclude", told.append)
    assert names["b"] == ["replica 0", "replica 2"] and len(values["b"]["accuracy"]) == 2
    assert len(told) == 1 and "b: EXCLUDING 1 diverged replica(s): 1" in told[0]
    with pytest.raises(InputError, match="b: 1 replica.*diverged.*on_diverged: exclude"):
        per_example_arms(paths, "fail")


def test_arms_on_different_test_sets_are_refused_naming_both_files(tmp_path):
    logits, labels = runs(1)
    a = group(tmp_path, "a", logits, labels)
    perm = np.roll(np.arange(N), 1)  # the same examples in another order
    b = group(tmp_path, "b", logits[:, perm], labels[perm])
    with pytest.raises(InputError) as err:
        per_example_arms({"a": [a], "b": [b]}, "exclude")
    message = str(err.value)
    assert f"'a' ({a}, labels sha256" in message and f"'b' ({b}, labels sha256" in message
    assert "different test sets" in message and "same order" in message
