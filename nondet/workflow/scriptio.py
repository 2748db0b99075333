"""What a researcher's training script writes, read and checked (nondet.workflow.script): the
format sniffed from its first bytes; logits of the right shape, finite; the test labels in the
logits' row order, equal to the data set's (or, with ``data: script``, the same SHA-256 in every
run of the model); the training examples it reports (and, when its data is its own, the size
``n_train`` of the training set they index), equal to the replica's resample."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from nondet.io.checksums import array_sha256


class ScriptError(RuntimeError):
    """A training script failed; the message names the model, the replica and the log."""


def sniff_format(path) -> str:
    """npz, npy, hdf5 or pt, from the file's first bytes (not its name)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x89HDF"):
        return "hdf5"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK"):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        return "pt" if any(n.endswith("data.pkl") for n in names) else "npz"
    raise ValueError("neither .npz, .npy, HDF5 nor a torch.save file")


def read_outputs(path, n_test, num_classes, y_test, what: str) -> tuple:
    """(logits, features or None, labels, reported) of one replica, checked; ScriptError naming
    ``what``. ``y_test`` None: the script owns its test set (``data: script``), its labels are the
    truth (``n_test`` and ``num_classes`` then come from its labels and logits). ``reported``: the
    ``train_index`` and ``n_train`` it wrote (None where it wrote none), for :func:`check_resample`."""
    from nondet.io.runs import RunsError, read_array

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise ScriptError(f"{what}: the script wrote nothing at {path} (call ctx.save(logits) or write {{out}})")
    try:
        fmt = sniff_format(path)
        logits = read_array(path, fmt, None, "logits", "predictions")
        names = ("features", "labels", "train_index", "n_train")
        extra = (
            {k: read_array(path, fmt, k, k, "labels-in-predictions", required=False) for k in names}
            if fmt != "npy"
            else {}
        )
    except (RunsError, ValueError, OSError) as e:
        raise ScriptError(f"{what}: cannot read {path}: {e}") from None
    logits = np.asarray(logits)
    if y_test is None:  # data: script: the script's own test set, its labels the truth
        labels = extra.get("labels")
        if labels is None:
            raise ScriptError(f"{what}: with data: script the script must write its test `labels` beside the logits")
        n_test, num_classes = np.asarray(labels).size, (logits.shape[1] if logits.ndim == 2 else -1)
        y_test = np.asarray(labels).ravel()
    if logits.shape != (n_test, num_classes):
        raise ScriptError(
            f"{what}: logits have shape {logits.shape}; expected (n_test, num_classes) = "
            f"({n_test}, {num_classes}), one row per test example in x_test's order"
        )
    check_labels(extra.get("labels"), y_test, what)
    logits = logits.astype(np.float32)
    if not np.isfinite(logits).all():
        rows = int((~np.isfinite(logits)).any(1).sum())
        raise ScriptError(f"{what}: NaN/inf logits in {rows} of {n_test} test examples (did training diverge?)")
    features = extra.get("features")
    if features is not None:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or len(features) != n_test or not np.isfinite(features).all():
            raise ScriptError(f"{what}: features must be finite, (n_test={n_test}, dim); got shape {features.shape}")
    reported = {k: extra.get(k) for k in ("train_index", "n_train")}
    return logits, features, np.asarray(y_test), reported


def _count(value, what: str) -> int:
    """A reported ``n_train``: one whole number >= 1."""
    a = np.asarray(value)
    v = a.ravel()[0] if a.size == 1 and np.issubdtype(a.dtype, np.number) else None
    if v is None or not np.isfinite(v) or v != int(v) or v < 1:
        raise ScriptError(f"{what}: n_train must be one whole number >= 1 (the size of its training set); got {a!r}")
    return int(v)


def check_resample(reported: dict, seed, spec, n_train, what: str, handed: bool = False):
    """The resample the replica trained on, checked against the configured draw
    (nondet.training.resample.replica_index(seed, n_train, spec)); returns (its index or None
    when the data source is off, n_train or None). ``n_train`` None: the script owns its data
    (``data: script``) and reports the size of its training set itself. ``handed``: a command
    read ``{train_data}`` (the resample is its whole training set, so it has nothing to report)."""
    from nondet.training.resample import replica_index

    written, n_written = reported.get("train_index"), reported.get("n_train")
    owned = n_train is None
    if n_written is not None:
        n_written = _count(n_written, what)
        if not owned and n_written != n_train:
            raise ScriptError(
                f"{what}: it reports n_train = {n_written}, but the pipeline's training set has {n_train} "
                "examples: report the size of the training set the index was drawn from (or leave n_train out)"
            )
    n = n_train if not owned else n_written
    if seed is None:  # the source off: the whole training set, any order
        check_train_index(written, None, what)
        return None, None
    if handed:
        return replica_index(seed, n, spec), n
    how = (
        "draw it with ctx.train_index(n) / ctx.sampler(n) (a train: script; ctx.save writes both) or "
        "python -m nondet resample --resample {resample_json} --n N --out idx.npy (a command), train on "
        "those examples and write train_index=<the indices> and n_train=N beside the logits"
    )
    if owned and n is None:
        raise ScriptError(
            f"{what}: the data source is on and its data is its own (data: script), but it reports no "
            f"`n_train` (the size of its training set, which the replica's resample is drawn from): {how}"
        )
    if written is None:
        raise ScriptError(
            f"{what}: the data source is on but the script reports no `train_index`: "
            + (
                how
                if owned
                else "train on the replica's resample ({train_index}: a .npy of example indices; in Python "
                "ctx.sampler or ctx.train_index) and write the indices it used beside the logits (train_index=...)"
            )
        )
    expected = replica_index(seed, n, spec)
    check_train_index(written, expected, what, owned)
    return expected, n


def check_labels(labels, y_test: np.ndarray, what: str) -> None:
    """The labels a script wrote must be the data set's y_test, row for row: another split or
    another row order would be scored against the wrong labels."""
    if labels is None:
        raise ScriptError(
            f"{what}: the script wrote no `labels`: write the test labels in the logits' row order "
            "beside them (np.savez(out, logits=..., labels=y_test); ctx.save does it), so that "
            "another test split or row order cannot be scored against the data set's labels"
        )
    labels = np.asarray(labels).ravel()
    if labels.shape != y_test.shape:
        raise ScriptError(
            f"{what}: it wrote {labels.size} labels for {y_test.size} test examples: its test set is "
            "not the data set's (own split?); score the pipeline's x_test, in its order"
        )
    wrong = int((labels != y_test).sum())
    if wrong:
        same_set = np.array_equal(np.sort(labels), np.sort(y_test))
        why = (
            "the same labels in another row order: write the logits in x_test's order"
            if same_set
            else "another test set (its own split?): score the pipeline's x_test ({data}), in its order"
        )
        raise ScriptError(
            f"{what}: the labels it wrote differ from the data set's y_test in {wrong} of {labels.size} rows: " + why
        )


def check_train_index(written, expected, what: str, owned: bool = False) -> None:
    """With the data source on, the script must report the training examples it used (the
    replica's resample, any order): provenance never records a resampling that did not happen."""
    if expected is None:
        if written is not None and not np.array_equal(np.sort(np.asarray(written).ravel()), np.arange(len(written))):
            raise ScriptError(
                f"{what}: the data source is off in this replica, but the script reports training on a "
                "resample of its own (train_index is not every example once): draw no resample of your own"
            )
        return
    if written is None:
        raise ScriptError(
            f"{what}: the data source is on but the script reports no `train_index`: train on the "
            "replica's resample ({train_index}: a .npy of example indices; in Python ctx.sampler or "
            "ctx.train_index) and write the indices it used beside the logits (train_index=...)"
        )
    written = np.sort(np.asarray(written, dtype=np.int64).ravel())
    if not np.array_equal(written, np.sort(np.asarray(expected, dtype=np.int64))):
        raise ScriptError(
            f"{what}: the training examples it reports ({written.size}, {np.unique(written).size} distinct) "
            f"are not the replica's resample ({len(expected)}, {np.unique(expected).size} distinct): "
            + (
                "draw it with ctx.train_index(n_train) or python -m nondet resample --resample {resample_json} "
                "--n N (N: the n_train it reports), not a resample of your own"
                if owned
                else "train on {train_index} (or ctx.train_index), not on a resample of your own"
            )
        )


def labels_sha256(labels) -> str:
    """The test labels' identity (nondet.io.checksums.array_sha256: values in order)."""
    return array_sha256(labels)


def check_owned_labels(labels, audit_path, earlier: list, job: dict, replica: int, log_path=None) -> None:
    """With data: script, a replica's test labels must be those the audit recorded (the same in
    every replica, condition and comparison arm of the model) and those of the job's other replicas."""
    digest = labels_sha256(labels)
    reference = json.loads(Path(audit_path).read_text()).get("labels_sha256") if audit_path else None
    if reference is None and earlier:
        reference = labels_sha256(earlier[0]["labels"])
    if reference is not None and digest != reference:
        raise ScriptError(
            f"model {job['model']} replica {replica} ({job['condition']}): its test labels (SHA-256 "
            f"{digest[:12]}) are not those of the model's other runs ({reference[:12]}, recorded by its audit): "
            "with data: script every replica, condition and comparison arm must score the same test set "
            f"in the same order{'; see its log ' + str(log_path) if log_path else ''}"
        )
