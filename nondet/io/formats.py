"""The readers of every data set but CIFAR (nondet.io.cifar), without torch: mnist1d (generated
locally), MNIST and Fashion-MNIST (idx), SVHN (.mat), a researcher's ``arrays`` file (.npz or
HDF5) and ``loader`` callables. Each returns the four arrays x_train, y_train, x_test, y_test
(numpy), checked afterwards by nondet.io.datasets.validate_arrays.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from nondet.io.callables import ModelError, resolve
from nondet.io.checksums import DataError, md5sum
from nondet.io.files import DATASET_KEYS


def make_mnist1d(seed: int, num_samples: int, train_split: float = 0.8) -> dict:
    """Generate mnist1d locally with the package's own generator (never its downloader).
    ``seed`` and ``num_samples``: dataset.seed and dataset.num_samples, whose defaults are the
    schema's (nondet/config.schema.yaml), filled in by the validated config.

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
