"""The data sets by config name: the registry :data:`DATASETS` (dataset.name -> reader),
:func:`make_dataset_arrays` (the arrays of the config's ``dataset`` section, checked by
:func:`validate_arrays`) and :func:`dataset_hash` (its ``data_hash``), without torch.

The readers live by format: nondet.io.cifar (CIFAR-10/100, read with a restricted unpickler) and
nondet.io.formats (mnist1d, idx sets, SVHN, arrays files, loaders); nondet.io.checksums holds
:class:`DataError` and the checksums. nondet.training.data turns the arrays into tensors.
"""

from __future__ import annotations

import numpy as np

from nondet.io.checksums import DataError, file_sha256
from nondet.io.cifar import make_cifar10, make_cifar100
from nondet.io.formats import (
    IDX_SETS,
    KEYS,
    load_with_loader,
    make_idx_set,
    make_mnist1d,
    make_svhn,
    read_array_file,
)


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
    "mnist1d": lambda spec, log: make_mnist1d(spec["seed"], spec["num_samples"]),
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
