"""The data sets' readers, without torch: mnist1d (generated locally), CIFAR-10/100 (the
python-pickle release, read with a restricted unpickler), MNIST and Fashion-MNIST (idx), SVHN
(.mat), a researcher's ``arrays`` file (.npz or HDF5) and ``loader`` callables. Each returns the
four arrays x_train, y_train, x_test, y_test (numpy); nondet.training.data turns them into tensors.

No file read here can run code: CIFAR batches are the only pickles, and they are loaded by
:class:`BatchUnpickler`, which admits only the containers and numpy arrays the release holds,
whatever the checksum (docs/robustness.md, "Files a user may receive").
"""

from __future__ import annotations

import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np

from nondet.io.callables import ModelError, resolve
from nondet.io.files import DATASET_KEYS


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


def sha256_bytes(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


#: file SHA-256 by (path, inode, size, mtime, ctime); only files unchanged for 2 s are cached
#: (a write within the timestamps' granularity could otherwise hide behind the same stat)
_SHA_CACHE: dict = {}


def file_sha256(path) -> str | None:
    """SHA-256 of a file's bytes (None if it does not exist), cached while the file's stat is
    unchanged: the plan asks for it once per job."""
    import os
    import time

    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (os.path.abspath(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key in _SHA_CACHE:
        return _SHA_CACHE[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    digest = h.hexdigest()
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > 2_000_000_000:
        _SHA_CACHE[key] = digest
    return digest


def dataset_hash(spec: dict, file_sha: str | None = None) -> str:
    """The ``data_hash`` of the data set ``spec`` describes: the hash of the config section, and
    for ``arrays`` also of the file's contents (``file_sha``: its SHA-256; None = read it now), so
    that a file regenerated at the same path is another data set (new checkpoints, new outputs)."""
    from nondet.io.h5io import spec_hash

    if spec.get("name") != "arrays":
        return spec_hash(spec)
    if file_sha is None:
        file_sha = file_sha256(spec["path"])
    return spec_hash({**spec, "file_sha256": file_sha})


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


# --- a researcher's own data and torchvision's classic image sets ------------------------------

KEYS = DATASET_KEYS

#: Where Debian's dataset-fashion-mnist package puts the four idx files (gzipped).
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"

IDX_FILES = {  # array -> file name of the idx release (the same for MNIST and Fashion-MNIST)
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

#: Per idx set: torchvision's folder name, download mirror, the MD5 of each official .gz
#: (torchvision's ``resources``, checked against torchvision by a test) and, where known, the MD5
#: of each decompressed file (Fashion-MNIST: measured on the files of Debian's package, which
#: recompresses the same bytes, so its .gz sums differ from the official ones).
IDX_SETS = {
    "mnist": {
        "folder": "MNIST",
        "mirror": "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "gz_md5": {
            "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        "raw_md5": {},
    },
    "fashion_mnist": {
        "folder": "FashionMNIST",
        "mirror": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "gz_md5": {
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        "raw_md5": {
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
    },
}

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path) -> bytes:
    import gzip

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return f.read()


def parse_idx(raw: bytes, source="idx data") -> np.ndarray:
    """An array from the bytes of an idx file (LeCun's format: magic 0 0 type ndim, big-endian
    uint32 dims, then the data)."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{source}: not an idx file (magic bytes {raw[:4].hex()})")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", ndim, 4).astype(np.int64)
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)) * dtype.itemsize:
        raise DataError(f"{source}: idx header says {tuple(dims)} but the data has another size")
    return np.frombuffer(raw, dtype, offset=offset).reshape(tuple(dims)).astype(dtype.newbyteorder("="))


def _find_idx(root: Path, folder: str, name: str) -> Path | None:
    for where in (root, root / folder / "raw"):
        for candidate in (where / name, where / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def make_idx_set(which: str, path=None, download=False, md5=None, log=print) -> dict:
    """MNIST or Fashion-MNIST from the four idx files (raw or .gz) in ``path`` or in
    ``path/<MNIST|FashionMNIST>/raw`` (torchvision's layout), downloaded there with torchvision's
    downloader when ``download`` is true. Each file must match the official .gz MD5 or the MD5
    of its decompressed bytes (``md5``: {file name: MD5 of the decompressed bytes}, for tests)."""
    meta = IDX_SETS[which]
    if path is None and which == "fashion_mnist":
        path = DEBIAN_FASHION_MNIST
    if path is None:
        raise DataError(f"dataset.path: the folder holding the {which} idx files is required")
    root = Path(path)
    out = {}
    for key, name in IDX_FILES.items():
        found = _find_idx(root, meta["folder"], name)
        if found is None and download:
            from torchvision.datasets.utils import download_url

            dest = root / meta["folder"] / "raw"
            log(f"downloading {meta['mirror']}{name}.gz to {dest}")
            download_url(f"{meta['mirror']}{name}.gz", str(dest), f"{name}.gz", meta["gz_md5"][name])
            found = dest / f"{name}.gz"
        if found is None:
            hint = " (apt-get install dataset-fashion-mnist)" if which == "fashion_mnist" else ""
            raise DataError(
                f"{which} not found: no {name} or {name}.gz in {root} or "
                f"{root / meta['folder'] / 'raw'}{hint}. Set dataset.path to the folder holding "
                "the idx files, or dataset.download: true on a machine with network"
            )
        raw = _read_bytes(found)
        raw_want = (md5 or meta["raw_md5"]).get(name)
        ok = hashlib.md5(raw).hexdigest() == raw_want
        if not ok and md5 is None and found.suffix == ".gz":
            ok = md5sum(found) == meta["gz_md5"][name]
        if not ok:
            raise DataError(
                f"{found}: MD5 matches neither the official release's .gz nor the known "
                f"decompressed {which} file; the file is corrupt or not {which}"
            )
        out[key] = parse_idx(raw, found)
    log(f"verified MD5 of the 4 {which} idx files in {root}")
    for key in ("x_train", "x_test"):
        out[key] = out[key][:, None]  # (N, 1, 28, 28)
    for key in ("y_train", "y_test"):
        out[key] = out[key].astype(np.int64)
    return out


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


SVHN = {  # torchvision.datasets.SVHN.split_list (checked against torchvision by a test)
    "train": (
        "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
        "train_32x32.mat",
        "e26dedcc434d2e4c54c9b2d4a06d8373",
    ),
    "test": (
        "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
        "test_32x32.mat",
        "eb5a983be6a315427106f1b164d9cef3",
    ),
}


def make_svhn(path, download: bool = False, md5: dict | None = None, log=print) -> dict:
    """SVHN (cropped digits, train + test, label 10 = digit 0 as torchvision maps it)."""
    import scipy.io

    root, out = Path(path), {}
    for split, (url, name, want) in SVHN.items():
        file = root / name
        if not file.is_file() and download:
            from torchvision.datasets.utils import download_url

            log(f"downloading {url} to {root}")
            download_url(url, str(root), name, want)
        if not file.is_file():
            raise DataError(
                f"SVHN not found: no {name} in {root}. Set dataset.download: true on a machine "
                "with network, or put the .mat files there and set dataset.path"
            )
        want = want if md5 is None else md5[name]
        if (got := md5sum(file)) != want:
            raise DataError(f"{file}: MD5 {got} != expected {want}; the file is corrupt")
        mat = scipy.io.loadmat(file)
        out[f"x_{split}"] = np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1), dtype=np.uint8)
        out[f"y_{split}"] = mat["y"].reshape(-1).astype(np.int64) % 10
    log(f"verified MD5 of {len(SVHN)} SVHN files in {root}")
    return out


def read_array_file(path, raw: bytes | None = None) -> dict:
    """x_train, y_train, x_test, y_test from one .npz or HDF5 (.h5/.hdf5) file (``raw``: its
    bytes, already read, e.g. to hash exactly what is loaded)."""
    import io

    path = Path(path)
    if raw is None and not path.is_file():
        raise DataError(f"dataset.path: {path} not found (name: arrays needs a .npz or .h5 file)")
    source = path if raw is None else io.BytesIO(raw)
    if path.suffix == ".npz":
        head = raw[:4] if raw is not None else open(path, "rb").read(4)
        if head[:2] != b"PK":  # np.load would say "contains pickled data" without the file
            raise DataError(
                f"dataset.path: {path} is not a .npz archive (a zip made by np.savez; it starts "
                f"with {head!r}); write it with np.savez(path, x_train=..., y_train=..., "
                "x_test=..., y_test=...)"
            )
        with np.load(source, allow_pickle=False) as f:
            names = set(f.files)
            missing = [k for k in KEYS if k not in names]
            arrays = {}
            for k in KEYS:
                if k not in names:
                    continue
                try:
                    arrays[k] = f[k]
                except ValueError:  # an object array: numpy says so without the file
                    raise DataError(
                        f"dataset.path: {path}: array {k!r} holds Python objects, which are "
                        "never loaded since loading them can run code; save numbers: np.savez(path, "
                        f"{k}=np.asarray({k}, dtype=np.float32 or np.int64), ...)"
                    ) from None
    elif path.suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(source, "r") as f:
            missing = [k for k in KEYS if k not in f]
            arrays = {k: f[k][()] for k in KEYS if k in f}
    else:
        raise DataError(f"dataset.path: {path} is neither .npz nor .h5/.hdf5")
    if missing:
        raise DataError(f"{path}: lacks {', '.join(missing)} (needs {', '.join(KEYS)})")
    return arrays


def load_with_loader(spec: dict, log=print) -> dict:
    """Call the user's ``dataset.loader`` ("package.module:load") with ``dataset.args``."""
    what = f"dataset.loader {spec['loader']!r}"
    try:
        fn = resolve(spec["loader"], spec.get("pythonpath"), "dataset.loader")
        args = dict(spec.get("args") or {})
        import inspect

        inspect.signature(fn).bind(**args)
    except ModelError as e:
        raise DataError(str(e)) from None
    except TypeError as e:
        raise DataError(f"{what} does not accept args {sorted(args)} ({e})") from None
    out = fn(**args)
    if isinstance(out, (tuple, list)) and len(out) == 4:
        out = dict(zip(KEYS, out))
    if not isinstance(out, dict) or set(out) != set(KEYS):
        got = sorted(out) if isinstance(out, dict) else type(out).__name__
        raise DataError(f"{what} returned {got}; expected (x_train, y_train, x_test, y_test) or a dict of them")
    log(f"loaded data with {spec['loader']}")
    return out


def validate_arrays(arrays: dict, source: str) -> dict:
    """Checked copies: tabular (N, D), 1-D signals (N, C, L) or images (N, C, H, W), same shape in train and test,
    one integer label per example in 0..K-1 (every test label seen in training), no NaN/inf."""
    out = {}
    for k in KEYS:
        v = arrays[k]
        if hasattr(v, "numpy"):  # a torch tensor
            v = v.detach().cpu().numpy()
        out[k] = np.array(v)  # a writable copy (loaders may return read-only views)
    for split in ("train", "test"):
        x, y = out[f"x_{split}"], out[f"y_{split}"]
        if x.ndim not in (2, 3, 4):
            raise DataError(
                f"{source}: x_{split} has shape {x.shape}; expected tabular features (N, D), 1-D "
                "signals (N, C, L) or images (N, C, H, W) (add a channel axis: x[:, None])"
            )
        if x.ndim == 2 and not np.issubdtype(x.dtype, np.floating):
            raise DataError(f"{source}: x_{split} is tabular (N, D) {x.dtype}; use float32 features")
        if not (np.issubdtype(x.dtype, np.floating) or x.dtype == np.uint8):
            raise DataError(f"{source}: x_{split} is {x.dtype}; use float32 or uint8 (images)")
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{source}: y_{split} has shape {y.shape}; expected ({len(x)},), one label per example")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{source}: y_{split} is {y.dtype}; labels must be integers 0..K-1")
        if len(y) and y.min() < 0:
            raise DataError(f"{source}: y_{split} has label {y.min()}; labels must be 0..K-1")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).reshape(len(x), -1).any(1).sum())
            raise DataError(f"{source}: x_{split} has NaN or inf in {bad} example(s)")
    if out["x_train"].shape[1:] != out["x_test"].shape[1:]:
        raise DataError(
            f"{source}: x_train examples have shape {out['x_train'].shape[1:]} but x_test {out['x_test'].shape[1:]}"
        )
    if len(out["y_train"]) < 2 or len(out["y_test"]) < 1:
        raise DataError(f"{source}: needs at least 2 training and 1 test example")
    k = int(out["y_train"].max()) + 1
    if len(np.unique(out["y_train"])) < 2:
        raise DataError(
            f"{source}: y_train holds a single class ({int(out['y_train'][0])}): every model would "
            "predict it and agree 100 %; a classification data set needs at least 2 classes"
        )
    if (m := int(out["y_test"].max())) >= k:
        raise DataError(f"{source}: y_test has label {m}, but training labels only go to {k - 1}")
    if np.issubdtype(out["x_train"].dtype, np.floating):
        out = {**out, "x_train": out["x_train"].astype(np.float32), "x_test": out["x_test"].astype(np.float32)}
    out["y_train"], out["y_test"] = out["y_train"].astype(np.int64), out["y_test"].astype(np.int64)
    return out


def make_dataset_arrays(spec: dict, log=print, raw: bytes | None = None) -> dict:
    """Arrays of the data set described by the config's ``dataset`` section; with ``n_train`` /
    ``n_test``, only the first so many examples of each split (a fixed subset, no random draw).
    ``raw``: the bytes of an ``arrays`` file, already read."""
    if raw is not None and spec["name"] == "arrays":
        arrays = validate_arrays(read_array_file(spec["path"], raw), spec["path"])
    else:
        arrays = _dataset_arrays(spec, log)
    for split in ("train", "test"):
        n = spec.get(f"n_{split}")
        if n is None:
            continue
        have = len(arrays[f"y_{split}"])
        if n > have:
            raise DataError(f"dataset.n_{split}: {n} examples asked, the {split} split has {have}")
        arrays[f"x_{split}"], arrays[f"y_{split}"] = arrays[f"x_{split}"][:n], arrays[f"y_{split}"][:n]
    return arrays


#: Every data set by its config name (dataset.name): spec, log -> arrays. The schema's enum of
#: dataset.name lists the same names (tests/test_registries.py).
DATASETS = {
    "mnist1d": lambda spec, log: make_mnist1d(spec.get("seed", 42), spec.get("num_samples", 5000)),
    "cifar10": lambda spec, log: make_cifar10(spec["path"], spec.get("download", False), spec.get("md5"), log),
    **{
        name: (
            lambda spec, log, name=name: make_idx_set(
                name, spec.get("path"), spec.get("download", False), spec.get("md5"), log
            )
        )
        for name in IDX_SETS
    },
    "cifar100": lambda spec, log: make_cifar100(spec["path"], spec.get("download", False), spec.get("md5"), log),
    "svhn": lambda spec, log: make_svhn(spec["path"], spec.get("download", False), spec.get("md5"), log),
    "arrays": lambda spec, log: validate_arrays(read_array_file(spec["path"]), spec["path"]),
    "loader": lambda spec, log: validate_arrays(load_with_loader(spec, log), f"dataset.loader {spec['loader']!r}"),
}


def _dataset_arrays(spec: dict, log=print) -> dict:
    name = spec["name"]
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name](spec, log)
