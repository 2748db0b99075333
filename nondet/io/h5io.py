"""HDF5 intermediates with provenance, written atomically.

Every file is written under a temporary name in the same directory and renamed when complete, so a
killed job never leaves a file that looks finished. Every file carries provenance attributes
(``provenance`` JSON plus a few flat keys) so a consumer can check where its inputs came from.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

#: Bump when a change must invalidate trained models (it is also passed as a Snakemake param).
#: 3: `vectorize: auto` trains cnn1d replicas as one wide model on a CPU (nondet.training.wide).
CODE_VERSION = "3"


#: The hash of the package code the running stage reaches (nondet.workflow.codehash), set by the
#: workflow script; recorded in every output's provenance. CODE_PARAM: the rule's ``code`` param,
#: when it differs (code_changes: warn keeps the hash a trained output was first made with).
CODE_HASH: str | None = None
CODE_PARAM: str | None = None


def set_code_hash(digest: str | None, param: str | None = None) -> None:
    """Record ``digest`` (and the rule's ``code`` param ``param``, if another) in the provenance of
    what this job writes."""
    global CODE_HASH, CODE_PARAM
    CODE_HASH, CODE_PARAM = digest, (param if param != digest else None)


class InputError(RuntimeError):
    """An input file is missing, corrupt, or from a different experiment."""


class OutputError(RuntimeError):
    """An output cannot be written."""


def spec_hash(obj) -> str:
    """Stable short hash of a JSON-serialisable object (e.g. the params of a job)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def library_versions() -> dict:
    import scipy

    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "h5py": h5py.__version__,
    }
    # torch's versions where the job uses torch (its import costs ~2 s, most of an analysis job;
    # the analysis environment, envs/analysis.yaml, has no torch at all)
    torch = sys.modules.get("torch")
    if torch is not None:
        versions["torch"] = torch.__version__
        versions["cuda"] = str(torch.version.cuda)
        versions["cudnn"] = str(torch.backends.cudnn.version())
    return versions


def provenance(**fields) -> dict:
    """Provenance of an output: the given fields plus versions, code version, host and time."""
    return {
        **fields,
        "code_version": CODE_VERSION,
        "code_hash": CODE_HASH,
        "code_param": CODE_PARAM,
        "git_commit": _git_commit(),
        "versions": library_versions(),
        "host": socket.gethostname(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _disk_full(e: BaseException) -> bool:
    # h5py: RuntimeError "... errno = 28, error message = 'No space left on device' ..."
    return getattr(e, "errno", None) == errno.ENOSPC or "No space left" in str(e) or "errno = 28" in str(e)


def check_writable(path) -> None:
    """Fail now, naming ``path``, if its folder cannot be made or written (a stage checks this
    before its work, not after hours of training)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):
            raise PermissionError("no write permission")
    except OSError as e:
        raise OutputError(f"cannot write {path}: output directory {path.parent} is not writable ({e})") from e


def _free_space(directory) -> str:
    try:
        return f"{shutil.disk_usage(directory).free / 2**20:.0f} MiB free there"
    except OSError:
        return "free space unknown"


def unwritable_folders(paths) -> list[str]:
    """The folders that would hold ``paths`` (each one's nearest existing ancestor) that cannot
    be written: found while the workflow is planned, not after the jobs before them ran."""
    bad = set()
    for p in paths:
        folder = Path(p).parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not os.access(folder, os.W_OK):
            bad.add(str(folder))
    return sorted(bad)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The temporary file is removed whatever happens; a full disk is reported as such.
    """
    path = Path(path)
    check_writable(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # h5py reports a full disk as a RuntimeError
        if not _disk_full(e):
            raise
        raise OutputError(
            f"cannot write {path}: no space left on device ({_free_space(path.parent)}); free "
            "some space and run the workflow again (finished outputs and checkpoints are kept)"
        ) from e
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path, write, what: str = "file") -> None:
    """``write(tmp)`` under a temporary name, renamed to ``path`` when complete; any failure
    (a full disk included, e.g. torch.save's "basic_ios::clear: iostream error") removes the
    temporary file and raises OutputError naming ``path`` and the free space."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            write(tmp)
    except OutputError:
        raise
    except (OSError, RuntimeError) as e:
        raise OutputError(f"cannot write {what} {path}: {e} ({_free_space(path.parent)}; is the disk full?)") from e


@contextlib.contextmanager
def atomic_h5(path, prov: dict):
    """Open ``path`` for writing under a temporary name; rename only if the block succeeds."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["provenance"] = json.dumps(prov, sort_keys=True, default=str)
            flat = ("kind", "experiment", "spec_hash", "data_hash", "code_version", "code_hash", "code_param")
            for key in (*flat, "content_sha256"):
                if prov.get(key) is not None:
                    f.attrs[key] = str(prov[key])
            yield f


def read_provenance(f: h5py.File) -> dict:
    return json.loads(f.attrs["provenance"])


def remake_hint(path) -> str:
    """How to recover from a bad intermediate file (works with Snakemake 9 whether or not the
    file is still there; deleting it alone is not enough when its outputs downstream exist)."""
    return (
        f"remake it and everything made from it with: snakemake --forcerun {path} "
        "(plus your usual --configfile/--cores options)"
    )


def open_input(path, kind: str | None, expect: dict | None = None) -> h5py.File:
    """Open an HDF5 input for reading, failing clearly if missing, corrupt, of the wrong kind
    (``kind`` None = any) or not made by the job spec this run expects (``expect``, see
    :func:`check_expected`)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input file {path} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(
            f"input file {path} is not a readable HDF5 file ({e}): it is damaged or truncated; " + remake_hint(path)
        ) from e
    try:
        if "provenance" not in f.attrs:
            raise InputError(f"input file {path} has no provenance attributes: not written by nondet")
        if kind is not None and f.attrs.get("kind") != kind:
            found = f.attrs.get("kind")
            raise InputError(f"input file {path} holds {found!r} data, expected {kind!r}")
        check_expected(f, path, expect)
    except BaseException:
        f.close()
        raise
    return f


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


#: What a difference in each provenance key means, for the error message.
_MEANING = {
    "spec_hash": "made with other settings (recipe, model, seeds, replicas, experiment name...)",
    "data_hash": "made from another data set",
    "code_version": "made by another code version",
}


def check_expected(f: h5py.File, path, expect: dict | None) -> None:
    """Every key of ``expect`` (e.g. spec_hash, data_hash, code_version, method) must equal the
    file's flat attribute of that name, or else its provenance entry; raises InputError naming
    the file and each difference."""
    if not expect:
        return
    prov = json.loads(f.attrs["provenance"])
    diffs = []
    for key, want in expect.items():
        have = f.attrs[key] if key in f.attrs else prov.get(key)
        if isinstance(have, bytes):
            have = have.decode()
        if _canonical(have) != _canonical(want):
            meaning = f" — {_MEANING[key]}" if key in _MEANING else ""
            diffs.append(f"  {key}: the file has {have!r}, this run expects {want!r}{meaning}")
    if diffs:
        raise InputError(
            f"input file {path} was not made by the job this run expects (it comes from another "
            f"configuration or run, experiment {prov.get('experiment', '?')!r}):\n"
            + "\n".join(diffs)
            + "\n"
            + remake_hint(path)
        )


def check_same_experiment(paths, attr: str = "data_hash") -> str:
    """All ``paths`` must carry the same ``attr`` (same data set / experiment); returns it."""
    values = {}
    for p in paths:
        with open_input(p, None) as f:
            values[str(p)] = str(f.attrs.get(attr, ""))
    distinct = set(values.values())
    if len(distinct) > 1:
        lines = "\n".join(f"  {p}: {v}" for p, v in values.items())
        raise InputError(f"inputs come from different experiments ({attr} differs):\n{lines}")
    return distinct.pop() if distinct else ""


def write_dict(group: h5py.Group, data: dict) -> None:
    """Write a (nested) dict of arrays/scalars/strings into ``group``."""
    for key, value in data.items():
        if isinstance(value, dict):
            write_dict(group.create_group(key), value)
        elif isinstance(value, str):
            group.attrs[key] = value
        else:
            group.create_dataset(key, data=np.asarray(value))


def read_dict(group: h5py.Group) -> dict:
    out = {k: v for k, v in group.attrs.items()}
    for key, item in group.items():
        out[key] = read_dict(item) if isinstance(item, h5py.Group) else item[()]
    return out
