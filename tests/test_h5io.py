import h5py
import numpy as np
import pytest

from nondet.io import h5io


@pytest.mark.slow
def test_round_trip_with_provenance(tmp_path):
    path = tmp_path / "x.h5"
    prov = h5io.provenance(kind="train", seeds={"init": 3}, data_hash="abc", spec_hash="def")
    data = {"weights": {"fc.weight": np.arange(6.0).reshape(2, 3)}, "note": "hello", "n": 3}
    with h5io.atomic_h5(path, prov) as f:
        h5io.write_dict(f, data)
    with h5io.open_input(path, "train") as f:
        back = h5io.read_dict(f)
        meta = h5io.read_provenance(f)
        assert f.attrs["data_hash"] == "abc" and f.attrs["spec_hash"] == "def"
    assert np.array_equal(back["weights"]["fc.weight"], data["weights"]["fc.weight"])
    assert back["note"] == "hello" and back["n"] == 3
    assert meta["seeds"] == {"init": 3} and meta["code_version"] == h5io.CODE_VERSION
    for key in ("versions", "git_commit", "host", "created"):
        assert key in meta
    assert "numpy" in meta["versions"]


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "y.h5"
    with pytest.raises(RuntimeError):
        with h5io.atomic_h5(path, {"kind": "train"}) as f:
            f.create_dataset("a", data=[1, 2])
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_open_input_errors(tmp_path):
    with pytest.raises(h5io.InputError, match="does not exist"):
        h5io.open_input(tmp_path / "missing.h5", "train")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(h5io.InputError, match="not a readable HDF5"):
        h5io.open_input(bad, "train")
    plain = tmp_path / "plain.h5"
    h5py.File(plain, "w").close()
    with pytest.raises(h5io.InputError, match="no provenance"):
        h5io.open_input(plain, "train")
    good = tmp_path / "good.h5"
    with h5io.atomic_h5(good, {"kind": "predict"}):
        pass
    with pytest.raises(h5io.InputError, match="expected 'train'"):
        h5io.open_input(good, "train")


def test_check_same_experiment(tmp_path):
    for name, h in (("a", "1"), ("b", "1"), ("c", "2")):
        with h5io.atomic_h5(tmp_path / f"{name}.h5", {"kind": "metrics", "data_hash": h}):
            pass
    assert h5io.check_same_experiment([tmp_path / "a.h5", tmp_path / "b.h5"]) == "1"
    with pytest.raises(h5io.InputError, match="different experiments"):
        h5io.check_same_experiment([tmp_path / "a.h5", tmp_path / "c.h5"])


@pytest.mark.slow
def test_open_input_checks_the_expected_job(tmp_path):
    path = tmp_path / "p.h5"
    prov = h5io.provenance(
        kind="predict", spec_hash="aaa", data_hash="ddd", method="tta", tta={"kind": "shift", "size": 2}
    )
    with h5io.atomic_h5(path, prov):
        pass
    want = {
        "spec_hash": "aaa",
        "data_hash": "ddd",
        "code_version": h5io.CODE_VERSION,
        "method": "tta",
        "tta": {"size": 2, "kind": "shift"},
    }
    h5io.open_input(path, "predict", want).close()  # flat attributes and provenance entries
    for key, value in (
        ("spec_hash", "bbb"),
        ("data_hash", "eee"),
        ("code_version", "0"),
        ("method", "plain"),
        ("tta", {"kind": "shift", "size": 1}),
    ):
        with pytest.raises(h5io.InputError) as err:
            h5io.open_input(path, "predict", {**want, key: value})
        assert str(path) in str(err.value) and f"{key}: the file has" in str(err.value)
        assert "--forcerun" in str(err.value)


def test_full_disk_during_an_hdf5_write_is_reported_and_cleaned(tmp_path):
    path = tmp_path / "z.h5"
    with pytest.raises(h5io.OutputError, match="no space left on device"):
        with h5io.atomic_h5(path, {"kind": "train"}):
            raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []
