"""Bring your own runs: predictions trained anywhere, imported into the pipeline's layout.

A *group* is a set of runs of one configuration, given as a glob of prediction files. Each file
holds the test-set logits (or probabilities) of one run, shape (n_examples, n_classes), or of
several runs, shape (n_runs, n_examples, n_classes), in one of these formats:

- ``.npy``: one array; ``.npz``: the array named ``key`` (or the only array);
- ``.h5``/``.hdf5``: the dataset named ``key`` (or the only dataset at the root);
- ``.pt``/``.pth``: a tensor, or a dict of tensors with ``key`` (``torch.load`` with
  ``weights_only=True``: no pickled code is run).

The labels come from a file in any of these formats (``labels``, array ``labels_key``) or, when no
labels file is given, from the array ``labels_key`` inside the prediction files. Whenever a
prediction file holds an array named ``labels_key``, it must equal the group's labels (same
examples in the same order). Optional penultimate features (``features``, a glob matched to the
prediction files in sorted order); without them CKA is computed on the logits (column ``cka_on``).
Optional per-run metadata: a CSV with a ``file`` column (path or file name) and any other columns
(e.g. ``seed``), used to pair runs across groups.

``import_group`` validates everything and writes the same predictions HDF5 the pipeline's predict
stage writes, with provenance naming every source file and its SHA-256. ``export`` writes a
pipeline's predictions back out as ``.npy`` files (the worked example of README.md).

No torch at import time (only to read ``.pt`` files).
"""

from __future__ import annotations

import csv
import glob as globlib
import json
import os
from pathlib import Path

import numpy as np

from nondet.io.checksums import array_sha256, file_sha256
from nondet.io.h5io import InputError, atomic_h5, open_input, provenance, spec_hash
from nondet.schema import schema_defaults

FORMATS = {".npy": "npy", ".npz": "npz", ".h5": "hdf5", ".hdf5": "hdf5", ".pt": "pt", ".pth": "pt"}
#: Probabilities are turned into logits as log(max(p, TINY)).
TINY = np.finfo(np.float32).tiny
#: Default keys looked up in container files when ``key`` / ``labels_key`` are not given.
DEFAULT_KEY, DEFAULT_LABELS_KEY = "logits", "labels"

GROUP_DEFAULTS = schema_defaults("runs", "groups", "*")  # the config schema's


class RunsError(InputError):
    """Imported runs are missing, malformed or inconsistent; the message names the file."""


def match_files(pattern: str, what: str) -> list[str]:
    """Files matching ``pattern`` (sorted, ``**`` recursive); an error naming ``what`` when none."""
    files = sorted(p for p in globlib.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))
    if not files:
        raise RunsError(f"{what}: no file matches {pattern!r} (relative to {os.getcwd()})")
    return files


def file_format(path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise RunsError(
            f"{path}: unknown file type {suffix!r}; supported: {', '.join(FORMATS)} "
            "(or set format: npy | npz | hdf5 | pt)"
        )
    return FORMATS[suffix]


def _pick(path, names: list[str], key, default, kind: str) -> str | None:
    """The array name to read from a container: ``key``, else ``default`` or the only array."""
    if key is not None:
        if key not in names:
            if kind == "labels-in-predictions":
                return None
            raise RunsError(f"{path}: no array {key!r} (it holds: {', '.join(names) or 'nothing'})")
        return key
    if default in names:
        return default
    if len(names) == 1 and kind == "predictions":
        return names[0]
    return None


def read_array(
    path, fmt: str = "auto", key=None, default=DEFAULT_KEY, kind="predictions", required=True
) -> np.ndarray | None:
    """One array from a file; ``None`` when not ``required`` and the container lacks it."""
    fmt = file_format(path, fmt)
    try:
        if fmt == "npy":
            return np.load(path, allow_pickle=False) if kind != "labels-in-predictions" else None
        if fmt == "npz":
            with np.load(path, allow_pickle=False) as z:
                name = _pick(path, list(z.files), key, default, kind)
                return z[name] if name else _missing(path, z.files, kind, required)
        if fmt == "hdf5":
            import h5py

            with h5py.File(path, "r") as f:
                names = [k for k in f if isinstance(f[k], h5py.Dataset)]
                name = _pick(path, names, key, default, kind)
                return f[name][()] if name else _missing(path, names, kind, required)
        if fmt == "pt":
            import torch

            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                names = [k for k, v in obj.items() if isinstance(v, torch.Tensor)]
                name = _pick(path, names, key, default, kind)
                if not name:
                    return _missing(path, names, kind, required)
                obj = obj[name]
            elif kind == "labels-in-predictions":
                return None
            if not isinstance(obj, torch.Tensor):
                raise RunsError(f"{path}: holds a {type(obj).__name__}, expected a tensor or a dict of tensors")
            obj = obj.detach()
            return (obj.float() if obj.is_floating_point() else obj).numpy()
    except RunsError:
        raise
    except Exception as e:  # corrupt file, pickle refused, wrong format...
        raise RunsError(_unreadable(path, fmt, e)) from None
    raise RunsError(f"{path}: unknown format {fmt!r}")


def _unreadable(path, fmt: str, e: Exception) -> str:
    """Why ``path`` cannot be read as ``fmt``, and the fix; never numpy's hint to load pickles
    (allow_pickle=True would run code from the file)."""
    what = f"{path}: cannot read as {fmt}"
    if os.path.islink(path):
        what = f"{path}: a link to {os.path.realpath(path)}, which is not a {fmt} prediction file"
    if "allow_pickle" in str(e) or "pickled" in str(e):
        if fmt == "npy" or fmt == "npz":
            return (
                f"{what} (no numpy array header: another format, or arrays of Python objects, "
                "which are never loaded since loading them can run code). Save plain numbers: "
                f"np.save(path, np.asarray(logits, dtype=np.float32)); or narrow the glob to them"
            )
    if os.path.islink(path):
        return f"{what} ({type(e).__name__}: {e}); narrow the glob to the prediction files"
    return f"{what} ({type(e).__name__}: {e})"


def _missing(path, names, kind, required):
    if not required or kind == "labels-in-predictions":
        return None
    raise RunsError(
        f"{path}: holds several arrays ({', '.join(names)}); say which with "
        f"{'key' if kind == 'predictions' else kind + '_key'}"
    )


def _check_labels(labels: np.ndarray, source: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise RunsError(f"{source}: labels must be one integer per example, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        if not (
            np.issubdtype(labels.dtype, np.floating)
            and np.all(np.isfinite(labels))
            and np.all(labels == np.round(labels))
        ):
            raise RunsError(f"{source}: labels must be integers (dtype {labels.dtype})")
    return labels.astype(np.int64)


def to_logits(values: np.ndarray, kind: str, source: str, tolerance: float) -> np.ndarray:
    """Validate one run's (n, k) array and return float32 logits."""
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.number):
        raise RunsError(f"{source}: not numeric (dtype {values.dtype})")
    values = values.astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise RunsError(
            f"{source}: {bad.sum()} NaN/inf value(s) in {len(rows)} example(s) "
            f"(first: example {rows[0]}); a diverged run? remove it from the glob"
        )
    if kind == "probabilities":
        if values.min() < 0 or values.max() > 1 + tolerance:
            raise RunsError(
                f"{source}: kind is probabilities but values lie in [{values.min():.4g}, "
                f"{values.max():.4g}]; set kind: logits if these are logits"
            )
        sums = values.sum(-1)
        worst = int(np.argmax(np.abs(sums - 1)))
        if abs(sums[worst] - 1) > tolerance:
            raise RunsError(
                f"{source}: probabilities do not sum to 1 (example {worst} sums to "
                f"{sums[worst]:.6g}; tolerance sum_tolerance={tolerance:g}); set kind: logits if "
                "these are logits or scores"
            )
        values = np.log(np.maximum(values, TINY))
    return values.astype(np.float32)


def looks_like_probabilities(values: np.ndarray, tolerance: float) -> bool:
    """Every row in [0, 1] and summing to 1 (within ``tolerance``): probabilities, not logits."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or values.shape[-1] < 2 or values.min() < 0 or values.max() > 1 + tolerance:
        return False
    return bool(np.all(np.abs(values.sum(-1) - 1) <= tolerance))


def read_metadata(path, files: list[str]) -> list[dict]:
    """One metadata row per file, from a CSV with a ``file`` column (path or file name)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "file" not in rows[0]:
        raise RunsError(f"{path}: metadata CSV needs a 'file' column (columns: {list(rows[0]) if rows else 'none'})")
    by_key = {}
    for row in rows:
        for k in {row["file"], os.path.normpath(row["file"]), os.path.basename(row["file"])}:
            by_key.setdefault(k, []).append(row)
    out = []
    for p in files:
        found = by_key.get(os.path.normpath(p)) or by_key.get(os.path.basename(p))
        if not found:
            raise RunsError(f"{path}: no metadata row for run file {p} (match by path or file name)")
        if len(found) > 1:
            raise RunsError(f"{path}: {len(found)} metadata rows match run file {p}")
        out.append({k: v for k, v in found[0].items() if k != "file"})
    return out


def load_group(spec: dict, name: str = "group") -> dict:
    """Read and validate one group's runs (``spec``: a ``runs.groups`` entry with defaults)."""
    spec = {**GROUP_DEFAULTS, **spec}
    what = f"runs.groups.{name}"
    files = match_files(spec["predictions"], f"{what}.predictions")
    fmt, kind, tol = spec["format"], spec["kind"], float(spec["sum_tolerance"])
    labels_key = spec["labels_key"]
    # labels: the labels file, else the first prediction file's labels array
    if spec["labels"]:
        labels_source = spec["labels"]
        if not os.path.isfile(labels_source):
            raise RunsError(f"{what}.labels: file {labels_source} does not exist")
        labels = read_array(labels_source, "auto", labels_key, DEFAULT_LABELS_KEY, "labels")
    else:
        labels_source = files[0]
        labels = read_array(files[0], fmt, labels_key, DEFAULT_LABELS_KEY, "labels-in-predictions")
        if labels is None:
            raise RunsError(
                f"{what}: no labels: give labels (a file) or labels_key (an array in the "
                f"prediction files); {files[0]} holds none named {labels_key or DEFAULT_LABELS_KEY!r}"
            )
    labels = _check_labels(labels, labels_source)
    checksum = array_sha256(labels)
    logits, sources, shape, as_probabilities = [], [], None, []
    for path in files:
        values = np.asarray(read_array(path, fmt, spec["key"], DEFAULT_KEY, "predictions"))
        if values.ndim not in (2, 3):
            raise RunsError(
                f"{path}: expected (n_examples, n_classes) or (n_runs, n_examples, n_classes), got shape {values.shape}"
            )
        runs = values[None] if values.ndim == 2 else values
        if shape is None:
            shape = runs.shape[1:]
        if runs.shape[1:] != shape:
            raise RunsError(
                f"{path}: shape (n_examples, n_classes) = {runs.shape[1:]} differs from {files[0]}'s "
                f"{shape}: every run must be scored on the same examples"
            )
        own = read_array(path, fmt, labels_key, DEFAULT_LABELS_KEY, "labels-in-predictions", required=False)
        if own is not None:
            own = _check_labels(own, path)
            if own.shape != labels.shape or array_sha256(own) != checksum:
                raise RunsError(
                    f"{path}: its labels differ from {labels_source}'s (checksum "
                    f"{array_sha256(own)[:12]} != {checksum[:12]}): different examples or "
                    "example order"
                )
        digest = file_sha256(path)
        for i, run in enumerate(runs):
            source = path if len(runs) == 1 else f"{path}[{i}]"
            logits.append(to_logits(run, kind, source, tol))
            if kind == "logits" and looks_like_probabilities(run, tol):
                as_probabilities.append(source)
            sources.append({"file": path, "index": i if values.ndim == 3 else None, "sha256": digest})
    if as_probabilities:
        listed = ", ".join(as_probabilities[:5]) + (" ..." if len(as_probabilities) > 5 else "")
        raise RunsError(
            f"{what}: {len(as_probabilities)} of {len(logits)} run(s) hold probabilities, not "
            f"logits (every row lies in [0, 1] and sums to 1): {listed}. Read as logits they "
            f"would give wrong cross-entropies and ensembles; set {what}.kind: probabilities"
        )
    n, k = shape
    if len(labels) != n:
        raise RunsError(f"{labels_source}: {len(labels)} labels but the runs have {n} examples ({files[0]})")
    if labels.min() < 0 or labels.max() >= k:
        bad = np.nonzero((labels < 0) | (labels >= k))[0]
        raise RunsError(
            f"{labels_source}: {len(bad)} label(s) out of range [0, {k}) for {k} classes "
            f"(first: example {bad[0]} has label {labels[bad[0]]})"
        )
    if len(logits) < 2:
        raise RunsError(f"{what}: {len(logits)} run found ({files}); a group needs at least 2 runs")
    features, cka_on = np.stack(logits), "logits"
    if spec["features"]:
        ffiles = match_files(spec["features"], f"{what}.features")
        if len(ffiles) != len(logits):
            raise RunsError(
                f"{what}.features: {len(ffiles)} feature files for {len(logits)} runs "
                "(one (n_examples, dim) array per run, matched in sorted order)"
            )
        feats = []
        for p in ffiles:
            x = np.asarray(read_array(p, fmt, spec["features_key"], "features", "predictions"), dtype=np.float64)
            if x.ndim != 2 or len(x) != n:
                raise RunsError(f"{p}: features must be (n_examples={n}, dim), got shape {x.shape}")
            if not np.all(np.isfinite(x)):
                raise RunsError(f"{p}: NaN/inf in features")
            feats.append(x.astype(np.float32))
        if len({f.shape for f in feats}) > 1:
            raise RunsError(f"{what}.features: feature dimensions differ between runs")
        features, cka_on = np.stack(feats), "features"
        for s, p in zip(sources, ffiles):
            s.update(features_file=p, features_sha256=file_sha256(p))
    metadata = [{} for _ in sources]
    if spec["metadata"]:
        if not os.path.isfile(spec["metadata"]):
            raise RunsError(f"{what}.metadata: file {spec['metadata']} does not exist")
        rows = read_metadata(spec["metadata"], [s["file"] for s in sources])
        metadata = rows
    return {
        "logits": np.stack(logits),
        "features": features,
        "labels": labels,
        "labels_sha256": checksum,
        "labels_source": labels_source,
        "cka_on": cka_on,
        "sources": sources,
        "metadata": metadata,
        "kind": kind,
    }


def data_hash_of(labels_sha256: str) -> str:
    """The data_hash of imported predictions: runs on the same examples share it."""
    return "labels:" + labels_sha256[:16]


def import_group(spec: dict, name: str, out_path, experiment: str = "runs", log=print) -> dict:
    """Validate group ``name`` and write it as a predictions HDF5 (kind ``predict``)."""
    spec = {**GROUP_DEFAULTS, **spec}
    g = load_group(spec, name)
    data_hash = data_hash_of(g["labels_sha256"])
    job = {
        "experiment": experiment,
        "model": spec["model"],
        "condition": name,
        "source": "imported",
        "group": spec,
        "data_hash": data_hash,
        "recipe": {"epochs": None, "cycles": None},  # unknown: trained elsewhere
    }
    job["spec_hash"] = spec_hash({"job": job, "sources": g["sources"]})
    labels_info = {"path": g["labels_source"], "sha256": g["labels_sha256"]}
    if spec["labels"]:
        labels_info["file_sha256"] = file_sha256(spec["labels"])
    prov = provenance(
        kind="predict",
        job=job,
        device="imported",
        experiment=experiment,
        spec_hash=job["spec_hash"],
        data_hash=data_hash,
        sources=g["sources"],
        labels=labels_info,
        method="imported",
    )
    m = len(g["logits"])
    with atomic_h5(out_path, prov) as f:
        f.create_dataset("logits", data=g["logits"])
        f.create_dataset("features", data=g["features"])
        f.create_dataset("labels", data=g["labels"])
        f.create_dataset("replicas", data=np.arange(m))
        f.create_dataset("diverged", data=np.zeros(m, dtype=bool))
        f.attrs["kernels_mode"] = "imported"
        f.attrs["method"] = "imported"
        f.attrs["test_passes"] = 1
        f.attrs["cka_on"] = g["cka_on"]
        f.attrs["run_metadata"] = json.dumps(g["metadata"])
    n, k = g["logits"].shape[1:]
    log(
        f"{name}: imported {m} runs x {n} examples x {k} classes from {len(set(s['file'] for s in g['sources']))} "
        f"file(s) ({spec['kind']}); labels sha256 {g['labels_sha256'][:12]}; CKA on {g['cka_on']} -> {out_path}"
    )
    return g


def run_metadata(path) -> list[dict]:
    """Per-run metadata rows stored by ``import_group`` (empty dicts for pipeline-trained runs)."""
    with open_input(path, "predict") as f:
        n = len(f["replicas"])
        return json.loads(f.attrs.get("run_metadata", json.dumps([{}] * n)))


# --- export: a pipeline's own predictions as .npy files -----------------------------------------


def export(predict_paths, out_dir, features: bool = True) -> list[Path]:
    """Write the runs of pipeline prediction files as ``run_<replica>.npy`` logits (n, k),
    ``labels.npy``, optionally ``features/run_<replica>.npy``, and ``metadata.csv`` (file,
    replica, model, condition). Returns the logits files."""
    from nondet.io.files import load_predictions

    pred = load_predictions(list(predict_paths))
    out_dir = Path(out_dir)
    (out_dir / "features" if features else out_dir).mkdir(parents=True, exist_ok=True)
    written, rows = [], []
    for z, h, r in zip(pred["logits"], pred["features"], pred["replicas"]):
        path = out_dir / f"run_{int(r):04d}.npy"
        np.save(path, z)
        if features:
            np.save(out_dir / "features" / f"run_{int(r):04d}.npy", h)
        written.append(path)
        rows.append(
            {"file": path.name, "replica": int(r), "model": pred["job"]["model"], "condition": pred["job"]["condition"]}
        )
    np.save(out_dir / "labels.npy", pred["labels"])
    with open(out_dir / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return written
