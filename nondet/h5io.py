"""HDF5 intermediates with provenance, written atomically.

Every file is written under a temporary name in the same directory and renamed when complete, so a
killed job never leaves a file that looks finished. Every file carries provenance attributes
(``provenance`` JSON plus a few flat keys) so a consumer can check where its inputs came from.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import socket
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np

#: Bump when a change must invalidate trained models (it is also passed as a Snakemake param).
CODE_VERSION = "2"


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
        root = Path(__file__).resolve().parent.parent
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
    try:
        import torch

        versions["torch"] = torch.__version__
        versions["cuda"] = str(torch.version.cuda)
        versions["cudnn"] = str(torch.backends.cudnn.version())
    except ImportError:
        pass
    return versions


def provenance(**fields) -> dict:
    """Provenance of an output: the given fields plus versions, code version, host and time."""
    return {
        **fields,
        "code_version": CODE_VERSION,
        "git_commit": _git_commit(),
        "versions": library_versions(),
        "host": socket.gethostname(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):
            raise PermissionError("no write permission")
    except OSError as e:
        raise OutputError(f"cannot write {path}: output directory {path.parent} is not writable ({e})") from e
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_h5(path, prov: dict):
    """Open ``path`` for writing under a temporary name; rename only if the block succeeds."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["provenance"] = json.dumps(prov, sort_keys=True, default=str)
            for key in ("kind", "experiment", "spec_hash", "data_hash"):
                if key in prov:
                    f.attrs[key] = str(prov[key])
            yield f


def read_provenance(f: h5py.File) -> dict:
    return json.loads(f.attrs["provenance"])


def open_input(path, kind: str) -> h5py.File:
    """Open an HDF5 input for reading, failing clearly if missing, corrupt or of the wrong kind."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input file {path} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"input file {path} is not a readable HDF5 file ({e})") from e
    if "provenance" not in f.attrs:
        f.close()
        raise InputError(f"input file {path} has no provenance attributes: not written by nondet")
    if f.attrs.get("kind") != kind:
        found = f.attrs.get("kind")
        f.close()
        raise InputError(f"input file {path} holds {found!r} data, expected {kind!r}")
    return f


def check_same_experiment(paths, attr: str = "data_hash") -> str:
    """All ``paths`` must carry the same ``attr`` (same data set / experiment); returns it."""
    values = {}
    for p in paths:
        with h5py.File(p, "r") as f:
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
