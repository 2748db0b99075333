"""Which GPU a local job uses when a machine has several.

Snakemake's ``--resources gpu=N`` caps how many GPU jobs run at once but does not say which GPU
each gets, and a plain ``cuda`` device is always the first one. So a job that sees several GPUs
claims one with an exclusive ``flock`` on a per-GPU lock file, held until the process exits (the
kernel drops it even on SIGKILL). Under SLURM a job sees only the GPU it was given
(CUDA_VISIBLE_DEVICES), and nothing is claimed. Lock files live in a per-user folder (one user's
jobs never wait on another's), and a job that finds every GPU held fails within seconds, naming
the processes that hold them, instead of waiting: with ``--resources gpu=N`` that cannot happen,
so it means more GPU jobs were started than the machine has GPUs.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path

_held = []  # open lock files: a claim lasts as long as the process


def lock_dir() -> Path:
    root = Path(os.environ.get("NONDET_GPU_LOCK_DIR", tempfile.gettempdir()))
    path = root / f"nondet-gpu-locks-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _holder(i: int) -> str:
    try:
        return (lock_dir() / f"gpu{i}.lock").read_text().strip() or "?"
    except OSError:
        return "?"


def claim_gpu(count: int, timeout: float = 10, poll: float = 0.5, log=print) -> int:
    """Index of a free GPU among ``count``, now held by this process. A GPU freed by a job that
    is just exiting is picked up within ``timeout`` seconds; after that the claim fails."""
    t0 = time.monotonic()
    while True:
        for i in range(count):
            f = open(lock_dir() / f"gpu{i}.lock", "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}\n")
            f.flush()
            _held.append(f)
            return i
        if time.monotonic() - t0 > timeout:
            holders = ", ".join(f"GPU {i}: {_holder(i)}" for i in range(count))
            raise RuntimeError(
                f"all {count} GPUs are held by other nondet jobs ({holders}; locks in "
                f"{lock_dir()}): more GPU jobs were started than there are GPUs. Run at most "
                f"{count} at once: --resources gpu={count} (profiles/local-gpu does this)"
            )
        time.sleep(poll)


def release_all() -> None:
    """Drop this process's claims (tests; a job simply exits)."""
    while _held:
        _held.pop().close()
