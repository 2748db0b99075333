"""Data sets, held as tensors on the training device.

The default data set, mnist1d, is generated locally (no download): 4000 train / 1000 test
one-dimensional signals of length 40, 10 classes. CIFAR-10 (paper scale) is read from the
python-pickle release (``cifar-10-batches-py/``), downloaded with torchvision's downloader only
when asked to, and every file's MD5 is checked. Its images are stored as uint8 and normalised per
channel on the device when loaded (:func:`from_arrays`).
"""

from __future__ import annotations

from dataclasses import dataclass

import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # (N, C, L) or (N, C, H, W), float32
    y_train: torch.Tensor  # (N,), int64
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device) -> "Dataset":
        return Dataset(
            self.name,
            self.x_train.to(device),
            self.y_train.to(device),
            self.x_test.to(device),
            self.y_test.to(device),
        )


def make_mnist1d(seed: int = 42, num_samples: int = 5000, train_split: float = 0.8) -> dict:
    """Generate mnist1d locally with the package's own generator (never its downloader).

    ``mnist1d.data.make_dataset`` reseeds NumPy's global RNG; we restore the caller's state
    afterwards so that nothing else is affected.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = int(seed)
    args.num_samples = int(num_samples)
    args.train_split = float(train_split)
    saved = np.random.get_state()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(saved)
    return {
        "x_train": d["x"].astype(np.float32)[:, None, :],
        "y_train": d["y"].astype(np.int64),
        "x_test": d["x_test"].astype(np.float32)[:, None, :],
        "y_test": d["y_test"].astype(np.int64),
    }


# --- CIFAR-10 -----------------------------------------------------------------------------------

#: The python-pickle release, as torchvision knows it (torchvision.datasets.CIFAR10; a test checks
#: these constants against torchvision so they cannot drift).
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


class DataError(RuntimeError):
    """A data set is missing, incomplete or fails its checksum."""


def md5sum(path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fetch_cifar10(root, download: bool = False, md5: dict | None = None, log=print) -> Path:
    """The verified ``cifar-10-batches-py`` folder under ``root``.

    Uses, in this order: the extracted folder; the archive ``cifar-10-python.tar.gz`` in ``root``
    (extracted after its MD5 is checked); torchvision's downloader when ``download`` is true.
    Every batch file is then checked against ``md5`` (default: torchvision's MD5s of the official
    release; tests pass the sums of their tiny stand-in). Fails with a message naming the file.
    """
    root = Path(root)
    folder = root / CIFAR10_FOLDER
    expected = CIFAR10_MD5 if md5 is None else md5
    missing = [n for n in expected if not (folder / n).is_file()]
    if missing:
        archive = root / CIFAR10_ARCHIVE
        if not archive.is_file() and download:
            from torchvision.datasets.utils import download_url

            log(f"downloading {CIFAR10_URL} to {root}")
            download_url(CIFAR10_URL, str(root), CIFAR10_ARCHIVE, CIFAR10_ARCHIVE_MD5)
        if archive.is_file():
            if md5 is None and (got := md5sum(archive)) != CIFAR10_ARCHIVE_MD5:
                raise DataError(
                    f"{archive}: MD5 {got} != {CIFAR10_ARCHIVE_MD5} (torchvision's); corrupt or "
                    "not the CIFAR-10 python release: delete it and download again"
                )
            log(f"extracting {archive}")
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(root, filter="data")
        missing = [n for n in expected if not (folder / n).is_file()]
    if missing:
        raise DataError(
            f"CIFAR-10 not found: {folder} lacks {', '.join(missing)} and there is no "
            f"{CIFAR10_ARCHIVE} in {root}. Set dataset.download: true on a machine with network, "
            "or put a copy of the python release there and set dataset.path"
        )
    for name, want in expected.items():
        if (got := md5sum(folder / name)) != want:
            raise DataError(f"{folder / name}: MD5 {got} != expected {want}; the file is corrupt")
    log(f"verified MD5 of {len(expected)} files in {folder}")
    return folder


def read_cifar_batches(folder, names) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of pickled CIFAR batches."""
    xs, ys = [], []
    for name in names:
        with open(Path(folder) / name, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch["labels"], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def make_cifar10(path, download: bool = False, md5: dict | None = None, log=print) -> dict:
    folder = fetch_cifar10(path, download, md5, log)
    x_train, y_train = read_cifar_batches(folder, CIFAR10_TRAIN)
    x_test, y_test = read_cifar_batches(folder, ["test_batch"])
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def write_cifar_batches(folder, x: np.ndarray, y: np.ndarray, name: str) -> None:
    """Write one batch in the release's pickle format (used by tests for a tiny local stand-in)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    batch = {
        "batch_label": name,
        "labels": [int(v) for v in y],
        "data": np.ascontiguousarray(x, dtype=np.uint8).reshape(len(x), -1),
        "filenames": [f"{name}_{i}.png" for i in range(len(x))],
    }
    with open(Path(folder) / name, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def make_dataset_arrays(spec: dict, log=print) -> dict:
    """Arrays of the data set described by the config's ``dataset`` section."""
    name = spec["name"]
    if name == "mnist1d":
        return make_mnist1d(spec.get("seed", 42), spec.get("num_samples", 5000))
    if name == "cifar10":
        return make_cifar10(spec["path"], spec.get("download", False), spec.get("md5"), log)
    raise ValueError(f"unknown dataset {name!r}; known: mnist1d, cifar10")


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and SD of uint8 images (N, C, H, W), from integer sums."""
    n = x.shape[0] * x.shape[2] * x.shape[3]
    s = x.sum(axis=(0, 2, 3), dtype=np.int64)
    ss = np.einsum("nchw,nchw->c", x, x, dtype=np.int64)
    mean = s / n
    return mean, np.sqrt(ss / n - mean**2)


def from_arrays(name: str, arrays: dict, device="cpu") -> Dataset:
    """Tensors on ``device``. uint8 images are moved as bytes, then normalised per channel there
    (statistics of the training set, in float64 on the host, so identical on every device)."""
    arrays = dict(arrays)
    stats = None
    if arrays["x_train"].dtype == np.uint8:
        stats = channel_stats(arrays["x_train"])
    t = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in arrays.items()}
    if stats is not None:
        shape = (1, -1) + (1,) * (t["x_train"].dim() - 2)
        mean = torch.tensor(stats[0], dtype=torch.float32, device=device).view(shape)
        std = torch.tensor(stats[1], dtype=torch.float32, device=device).view(shape)
        for k in ("x_train", "x_test"):
            t[k] = (t[k].float() - mean) / std
    return Dataset(name, t["x_train"], t["y_train"], t["x_test"], t["y_test"])
