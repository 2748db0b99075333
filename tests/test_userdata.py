"""A researcher's own data (arrays file, loader by import path), torchvision's classic image sets
(idx, CIFAR-100, SVHN) with MD5 checks, Debian's Fashion-MNIST, and augmentation per data kind."""

import gzip
import hashlib
import pickle
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from nondet.io import checksums, cifar, datasets, formats
from nondet.training.augment import Augmenter, crop_flip_params
from nondet.training.data import from_arrays

REPO = Path(__file__).resolve().parent.parent


def arrays(n_train=20, n_test=10, shape=(1, 8, 8), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.normal(size=(n_train, *shape)).astype(np.float32),
        "y_train": np.arange(n_train) % classes,
        "x_test": rng.normal(size=(n_test, *shape)).astype(np.float32),
        "y_test": np.arange(n_test) % classes,
    }


# --- arrays file and loader ---------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npz", ".h5", ".hdf5"])
def test_arrays_file_npz_and_hdf5(tmp_path, suffix):
    a = arrays(shape=(2, 16))  # 1-D signals, 2 channels
    path = tmp_path / f"mine{suffix}"
    if suffix == ".npz":
        np.savez(path, **a)
    else:
        with h5py.File(path, "w") as f:
            for k, v in a.items():
                f.create_dataset(k, data=v)
    out = datasets.make_dataset_arrays({"name": "arrays", "path": str(path)})
    assert all(np.array_equal(out[k], a[k]) for k in a)
    assert out["y_train"].dtype == np.int64 and out["x_train"].dtype == np.float32


def test_uint8_signals_are_normalised_per_channel():
    a = arrays(shape=(2, 16))
    a["x_train"] = (np.arange(20 * 32).reshape(20, 2, 16) % 251).astype(np.uint8)
    a["x_test"] = a["x_train"][:10]
    d = from_arrays("arrays", a)
    assert torch.allclose(d.x_train.mean((0, 2)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(d.x_train.std((0, 2), unbiased=False), torch.ones(2), atol=1e-4)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"x_train": np.zeros(20, np.float32)},
            r"x_train has shape \(20,\); expected tabular features \(N, D\), 1-D signals",
        ),
        ({"y_train": np.arange(19) % 3}, r"y_train has shape \(19,\); expected \(20,\), one label per example"),
        ({"y_train": np.full(20, 0.5)}, r"y_train is float64; labels must be integers 0..K-1"),
        ({"y_test": np.r_[np.arange(9) % 3, -1]}, r"y_test has label -1; labels must be 0..K-1"),
        ({"y_test": np.r_[np.arange(9) % 3, 7]}, r"y_test has label 7, but training labels only go to 2"),
        (
            {"x_test": np.zeros((10, 1, 8, 9), np.float32)},
            r"x_train examples have shape \(1, 8, 8\) but x_test \(1, 8, 9\)",
        ),
        ({"x_train": np.full((20, 1, 8, 8), np.nan, np.float32)}, r"x_train has NaN or inf in 20 example\(s\)"),
        ({"x_train": np.zeros((20, 1, 8, 8), np.int32)}, r"x_train is int32; use float32 or uint8"),
    ],
)
def test_bad_arrays_fail_with_their_message(tmp_path, change, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **{**arrays(), **change})
    with pytest.raises(checksums.DataError, match=message) as e:
        datasets.make_dataset_arrays({"name": "arrays", "path": str(path)})
    assert str(e.value).startswith(str(path))


def test_arrays_file_missing_key_or_file(tmp_path):
    path = tmp_path / "partial.npz"
    a = arrays()
    del a["y_test"]
    np.savez(path, **a)
    with pytest.raises(checksums.DataError, match="partial.npz: lacks y_test"):
        datasets.make_dataset_arrays({"name": "arrays", "path": str(path)})
    with pytest.raises(checksums.DataError, match="dataset.path: .*nothere.npz not found"):
        datasets.make_dataset_arrays({"name": "arrays", "path": str(tmp_path / "nothere.npz")})
    (tmp_path / "mine.csv").write_text("1,2\n")
    with pytest.raises(checksums.DataError, match="neither .npz nor .h5/.hdf5"):
        datasets.make_dataset_arrays({"name": "arrays", "path": str(tmp_path / "mine.csv")})


LOADERS = """
import numpy as np

def good(n=20):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(n, 1, 8)).astype(np.float32), np.arange(n) % 2,
            rng.normal(size=(6, 1, 8)).astype(np.float32), np.arange(6) % 2)

def three():
    return good()[:3]
"""


@pytest.fixture(scope="module")
def loaders(tmp_path_factory):
    root = tmp_path_factory.mktemp("loaders")
    (root / "myloaders.py").write_text(textwrap.dedent(LOADERS))
    return str(root)


def test_loader_by_import_path(loaders):
    spec = {"name": "loader", "loader": "myloaders:good", "pythonpath": loaders, "args": {"n": 12}}
    out = datasets.make_dataset_arrays(spec, log=lambda *_: None)
    assert out["x_train"].shape == (12, 1, 8) and out["y_test"].dtype == np.int64


@pytest.mark.parametrize(
    "loader, args, message",
    [
        ("nosuchmodule_abc:load", {}, r"dataset.loader: cannot import module 'nosuchmodule_abc'"),
        ("myloaders:nothing", {}, r"dataset.loader: module 'myloaders' has no attribute 'nothing'"),
        ("myloaders:good", {"size": 3}, r"dataset.loader 'myloaders:good' does not accept args \['size'\]"),
        ("myloaders:three", {}, r"returned tuple; expected \(x_train, y_train, x_test, y_test\)"),
    ],
)
def test_bad_loader_fails_with_its_message(loaders, loader, args, message):
    spec = {"name": "loader", "loader": loader, "pythonpath": loaders, "args": args}
    with pytest.raises(checksums.DataError, match=message):
        datasets.make_dataset_arrays(spec, log=lambda *_: None)


# --- idx (MNIST, Fashion-MNIST), CIFAR-100, SVHN --------------------------------------------------


def idx_bytes(a: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, a.ndim]) + np.array(a.shape, ">u4").tobytes() + a.astype(np.uint8).tobytes()


def write_tiny_idx(folder: Path, gz=True, seed=0) -> dict:
    """A tiny MNIST-format set (idx files); returns {file: MD5 of the decompressed bytes}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "x_train": rng.integers(0, 256, (12, 28, 28)),
        "y_train": np.arange(12) % 10,
        "x_test": rng.integers(0, 256, (5, 28, 28)),
        "y_test": np.arange(5),
    }
    md5 = {}
    for key, name in formats.IDX_FILES.items():
        raw = idx_bytes(data[key])
        md5[name] = hashlib.md5(raw).hexdigest()
        if gz:
            with gzip.open(folder / f"{name}.gz", "wb") as f:
                f.write(raw)
        else:
            (folder / name).write_bytes(raw)
    return md5


def test_idx_constants_agree_with_torchvision():
    from torchvision.datasets import CIFAR100, MNIST, SVHN, FashionMNIST

    for which, tv in (("mnist", MNIST), ("fashion_mnist", FashionMNIST)):
        assert formats.IDX_SETS[which]["gz_md5"] == {f.removesuffix(".gz"): m for f, m in tv.resources}
        assert formats.IDX_SETS[which]["folder"] == tv.__name__ and formats.IDX_SETS[which]["mirror"] in tv.mirrors
    c = cifar.CIFAR100
    assert (c["url"], c["archive"], c["archive_md5"], c["folder"]) == (
        CIFAR100.url,
        CIFAR100.filename,
        CIFAR100.tgz_md5,
        CIFAR100.base_folder,
    )
    assert c["md5"] == dict(CIFAR100.train_list + CIFAR100.test_list)
    assert {k: list(v) for k, v in formats.SVHN.items()} == {k: SVHN.split_list[k] for k in ("train", "test")}


@pytest.mark.parametrize("gz, layout", [(True, ""), (False, ""), (True, "MNIST/raw")])
def test_idx_reader_raw_gz_and_torchvision_layout(tmp_path, gz, layout):
    from torchvision.datasets.mnist import read_image_file, read_label_file

    md5 = write_tiny_idx(tmp_path / layout, gz)
    out = datasets.make_dataset_arrays({"name": "mnist", "path": str(tmp_path), "md5": md5}, log=lambda *_: None)
    assert out["x_train"].shape == (12, 1, 28, 28) and out["x_train"].dtype == np.uint8
    if not gz:  # the same arrays as torchvision's own reader
        folder = tmp_path / layout
        assert np.array_equal(out["x_test"][:, 0], read_image_file(folder / "t10k-images-idx3-ubyte").numpy())
        assert np.array_equal(out["y_train"], read_label_file(folder / "train-labels-idx1-ubyte").numpy())


def test_idx_md5_and_missing_files(tmp_path):
    md5 = write_tiny_idx(tmp_path)
    bad = {**md5, "t10k-labels-idx1-ubyte": "0" * 32}
    with pytest.raises(checksums.DataError, match="t10k-labels-idx1-ubyte.gz: MD5 matches neither"):
        datasets.make_dataset_arrays({"name": "mnist", "path": str(tmp_path), "md5": bad}, log=lambda *_: None)
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(checksums.DataError, match="mnist not found: no train-images-idx3-ubyte or .*dataset.download"):
        datasets.make_dataset_arrays({"name": "mnist", "path": str(tmp_path), "md5": md5}, log=lambda *_: None)
    with pytest.raises(checksums.DataError, match="not an idx file"):
        formats.parse_idx(b"\x00\x01\x02\x03", "x")


@pytest.mark.slow
def test_fashion_mnist_from_debian_package():
    """The real files of Debian's dataset-fashion-mnist (make test installs it when missing):
    MD5-checked, and the same arrays as torchvision's reader of the decompressed files."""
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    folder = Path(formats.DEBIAN_FASHION_MNIST)
    assert (folder / "t10k-labels-idx1-ubyte.gz").is_file(), (
        "Debian's dataset-fashion-mnist is not installed: run `make datasets` (apt-get install dataset-fashion-mnist)"
    )
    out = datasets.make_dataset_arrays({"name": "fashion_mnist"}, log=lambda *_: None)
    assert out["x_train"].shape == (60000, 1, 28, 28) and out["x_test"].shape == (10000, 1, 28, 28)
    assert set(np.unique(out["y_train"])) == set(range(10))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "labels"
        raw.write_bytes(gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes()))
        assert np.array_equal(out["y_test"], read_sn3_pascalvincent_tensor(str(raw)).numpy())


def test_cifar100_pickle_release(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    md5 = {}
    for split, n in (("train", 10), ("test", 4)):
        batch = {
            "data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
            "fine_labels": list(range(n)),
            "coarse_labels": [0] * n,
        }
        with open(folder / split, "wb") as f:
            pickle.dump(batch, f)
        md5[split] = checksums.md5sum(folder / split)
    out = datasets.make_dataset_arrays({"name": "cifar100", "path": str(tmp_path), "md5": md5}, log=lambda *_: None)
    assert out["x_train"].shape == (10, 3, 32, 32) and list(out["y_test"]) == [0, 1, 2, 3]
    with pytest.raises(checksums.DataError, match="test: MD5"):
        datasets.make_dataset_arrays({"name": "cifar100", "path": str(tmp_path), "md5": {**md5, "test": "0" * 32}})
    with pytest.raises(checksums.DataError, match="CIFAR-100 not found: .* lacks train"):
        datasets.make_dataset_arrays({"name": "cifar100", "path": str(tmp_path / "none"), "md5": md5})


def test_svhn_mat_files(tmp_path):
    import scipy.io

    rng = np.random.default_rng(0)
    md5 = {}
    for split, n in (("train", 6), ("test", 3)):
        name = f"{split}_32x32.mat"
        scipy.io.savemat(
            tmp_path / name,
            {
                "X": rng.integers(0, 256, (32, 32, 3, n)).astype(np.uint8),
                "y": np.arange(1, n + 1).reshape(-1, 1) * 10 // n,
            },
        )
        md5[name] = checksums.md5sum(tmp_path / name)
    out = datasets.make_dataset_arrays({"name": "svhn", "path": str(tmp_path), "md5": md5}, log=lambda *_: None)
    assert out["x_train"].shape == (6, 3, 32, 32) and out["y_train"].max() <= 9
    assert out["y_train"][-1] == 0  # label 10 is the digit 0, as torchvision maps it
    with pytest.raises(checksums.DataError, match="SVHN not found: no train_32x32.mat"):
        datasets.make_dataset_arrays({"name": "svhn", "path": str(tmp_path / "none"), "md5": md5})


# --- augmentation per data kind ------------------------------------------------------------------


def test_crop_is_crop_flip_without_flips():
    n, pad = 50, 2
    aug = Augmenter("crop", seed=3, n=n, size=pad)
    x = torch.arange(n * 36, dtype=torch.float32).reshape(n, 1, 6, 6)
    index = torch.arange(n)
    params = crop_flip_params(3, 0, n, pad)
    assert params[:, 2].any()  # crop_flip would flip some of these images
    from nondet.training.augment import crop_flip

    assert torch.equal(aug(x, index, 0), crop_flip(x, torch.cat([params[:, :2], 0 * params[:, 2:]], 1), pad))


@pytest.mark.parametrize(
    "kind, shape, message",
    [
        (
            "shift",
            (4, 1, 6, 6),
            r"augment 'shift' does not fit this data set's inputs of shape \(1, 6, 6\); use crop or crop_flip",
        ),
        ("crop", (4, 1, 6), r"augment 'crop' does not fit this data set's 1-D signals \(N, C, L\); use shift"),
        ("crop_flip", (4, 1, 6), r"augment 'crop_flip' does not fit .*; use shift"),
    ],
)
def test_augmentation_must_fit_the_data_kind(kind, shape, message):
    with pytest.raises(ValueError, match=message):
        Augmenter(kind, 0, 4, 1)(torch.zeros(shape), torch.arange(4), 0)


@pytest.mark.parametrize(
    "kind, shape, message",
    [
        ("shift", (4, 1, 6, 6), r"tta.kind 'shift' does not fit test inputs of shape \(1, 6, 6\); use crops"),
        ("crops", (4, 2, 6), r"tta.kind 'crops' does not fit test inputs of shape \(2, 6\); use shift"),
    ],
)
def test_tta_views_must_fit_the_data_kind(kind, shape, message):
    from nondet.training.tta import check_fits

    check_fits(None, torch.zeros(shape))  # no TTA: nothing to check
    with pytest.raises(ValueError, match=message):
        check_fits({"kind": kind, "size": 1}, torch.zeros(shape))


def test_auto_augmentation_and_tta_follow_the_data_kind():
    from nondet.training.tta import fit_kind

    n, index = 20, torch.arange(20)
    signals, images = torch.randn(n, 2, 12), torch.randn(n, 1, 6, 6)
    assert torch.equal(Augmenter("auto", 1, n, 2)(signals, index, 0), Augmenter("shift", 1, n, 2)(signals, index, 0))
    assert torch.equal(Augmenter("auto", 1, n, 2)(images, index, 0), Augmenter("crop", 1, n, 2)(images, index, 0))
    assert fit_kind({"kind": "auto", "size": 2}, signals)["kind"] == "shift"
    assert fit_kind({"kind": "auto", "size": 2}, images)["kind"] == "crops"
    assert fit_kind({"kind": "flip", "size": 2}, images)["kind"] == "flip"
