"""CIFAR-10 and CIFAR-100 from their python-pickle releases: finding, downloading and checking
the release (:func:`fetch_release`), the restricted unpickler (:class:`BatchUnpickler`) and the
batch reader and writer.

No file read here can run code: CIFAR batches are the only pickles the data sets hold, and they are
loaded by :class:`BatchUnpickler`, which admits only the containers and numpy arrays the release
holds, whatever the checksum (docs/robustness.md, "Files a user may receive").
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np

from nondet.io.checksums import DataError, md5sum

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


def fetch_cifar10(root, download: bool = False, md5: dict | None = None, log=print) -> Path:
    """The verified ``cifar-10-batches-py`` folder under ``root``.

    Uses, in this order: the extracted folder; the archive ``cifar-10-python.tar.gz`` in ``root``
    (extracted after its MD5 is checked); torchvision's downloader when ``download`` is true.
    Every batch file is then checked against ``md5`` (default: torchvision's MD5s of the official
    release; tests pass the sums of their tiny stand-in). Fails with a message naming the file.
    """
    return fetch_release(
        Path(root),
        CIFAR10_FOLDER,
        CIFAR10_MD5 if md5 is None else md5,
        CIFAR10_ARCHIVE,
        CIFAR10_ARCHIVE_MD5 if md5 is None else None,
        CIFAR10_URL,
        download,
        "CIFAR-10",
        log,
    )


def fetch_release(
    root: Path, folder_name, expected: dict, archive_name, archive_md5, url, download: bool, what: str, log=print
) -> Path:
    """A verified folder of a python-pickle release (CIFAR-10, CIFAR-100): see fetch_cifar10.
    ``archive_md5`` None skips the archive's check (tests' stand-ins)."""
    folder = root / folder_name
    missing = [n for n in expected if not (folder / n).is_file()]
    if missing:
        archive = root / archive_name
        if not archive.is_file() and download:
            from torchvision.datasets.utils import download_url

            log(f"downloading {url} to {root}")
            download_url(url, str(root), archive_name, archive_md5)
        if archive.is_file():
            if archive_md5 is not None and (got := md5sum(archive)) != archive_md5:
                raise DataError(
                    f"{archive}: MD5 {got} != {archive_md5} (torchvision's); corrupt or "
                    f"not the {what} python release: delete it and download again"
                )
            log(f"extracting {archive}")
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(root, filter="data")
        missing = [n for n in expected if not (folder / n).is_file()]
    if missing:
        raise DataError(
            f"{what} not found: {folder} lacks {', '.join(missing)} and there is no "
            f"{archive_name} in {root}. Set dataset.download: true on a machine with network, "
            "or put a copy of the python release there and set dataset.path"
        )
    for name, want in expected.items():
        if (got := md5sum(folder / name)) != want:
            raise DataError(f"{folder / name}: MD5 {got} != expected {want}; the file is corrupt")
    log(f"verified MD5 of {len(expected)} files in {folder}")
    return folder


# --- pickles: containers and numpy arrays only -------------------------------------------------


def _numpy_globals() -> dict:
    """The globals a pickled numpy array names, under every module path numpy has used (numpy 1
    wrote numpy.core.multiarray, numpy 2 writes numpy._core.multiarray), mapped to the objects
    of the installed numpy; and codecs.encode, with which protocol 2 pickles bytes."""
    import codecs

    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    scalar = np.float64(0).__reduce__()[0]
    out = {("_codecs", "encode"): codecs.encode}
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5: the array's bytes as a buffer
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "_reconstruct")] = reconstruct
        out[(mod, "scalar")] = scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        out[(mod, "_frombuffer")] = frombuffer
    out[("numpy", "ndarray")] = np.ndarray
    out[("numpy", "dtype")] = np.dtype
    return out


class BatchUnpickler(pickle.Unpickler):
    """An unpickler for the CIFAR python release (and any pickle of dicts, lists, strings, numbers
    and numpy arrays): every other global a pickle names is refused, so a pickled payload (an
    ``os.system`` call, a class with ``__reduce__``) fails before anything runs, whatever the
    file's checksum or who chose it (design.md 12, "Restricted unpickling")."""

    ALLOWED = _numpy_globals()

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def load_batch(path, labels_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one pickled batch of the CIFAR python
    release, read with :class:`BatchUnpickler`; a file that is not such a batch fails naming it."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            batch = BatchUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise DataError(
            f"{path}: not a batch of the CIFAR python release ({e}); only dicts, lists, numbers and "
            "numpy arrays are read from it, nothing that runs code. Delete the folder and download "
            "the release again (dataset.download: true) or copy it from a trusted source"
        ) from None
    except Exception as e:  # truncated, random bytes, another format
        raise DataError(f"{path}: cannot be read as a pickled CIFAR batch ({type(e).__name__}: {e})") from None
    data = batch.get("data") if isinstance(batch, dict) else None
    labels = batch.get(labels_key) if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or labels is None:
        raise DataError(f"{path}: not a CIFAR batch (needs a dict with a uint8 array 'data' and '{labels_key}')")
    labels = np.asarray(labels)
    if labels.dtype == object or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: '{labels_key}' are not integers")
    if data.size % (3 * 32 * 32) or data.size // (3 * 32 * 32) != len(labels):
        raise DataError(f"{path}: 'data' of shape {data.shape} does not hold {len(labels)} 3x32x32 images")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def read_cifar_batches(folder, names) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of pickled CIFAR batches."""
    xs, ys = [], []
    for name in names:
        x, y = load_batch(Path(folder) / name, "labels")
        xs.append(x)
        ys.append(y)
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


CIFAR100 = {
    "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "archive": "cifar-100-python.tar.gz",
    "archive_md5": "eb9058c3a382ffc7106e4002c42a8d85",
    "folder": "cifar-100-python",
    "md5": {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"},
}


def make_cifar100(path, download: bool = False, md5: dict | None = None, log=print) -> dict:
    """CIFAR-100 (fine labels, 100 classes) from its python release, as CIFAR-10 (same checks)."""
    c = CIFAR100
    folder = fetch_release(
        Path(path),
        c["folder"],
        c["md5"] if md5 is None else md5,
        c["archive"],
        c["archive_md5"] if md5 is None else None,
        c["url"],
        download,
        "CIFAR-100",
        log,
    )
    out = {}
    for split in ("train", "test"):
        out[f"x_{split}"], out[f"y_{split}"] = load_batch(folder / split, "fine_labels")
    return out
