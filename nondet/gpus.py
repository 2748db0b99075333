"""Which GPU a local job uses when a machine has several.

Snakemake's ``--resources gpu=N`` caps how many GPU jobs run at once but does not say which GPU
each gets, and a plain ``cuda`` device is always the first one. So a job that sees several GPUs
claims one with an exclusive ``flock`` on a per-GPU lock file, held until the process exits (the
kernel drops it even on SIGKILL). Under SLURM a job sees only the GPU it was given
(CUDA_VISIBLE_DEVICES), and nothing is claimed.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path

_held = []  # open lock files: a claim lasts as long as the process


def lock_dir() -> Path:
    path = Path(os.environ.get("NONDET_GPU_LOCK_DIR", tempfile.gettempdir())) / "nondet-gpu-locks"
    path.mkdir(parents=True, exist_ok=True)
    return path


def claim_gpu(count: int, timeout: float = 600, poll: float = 2.0, log=print) -> int:
    """Index of a free GPU among ``count``, now held by this process; waits up to ``timeout``."""
    t0 = time.monotonic()
    while True:
        for i in range(count):
            f = open(lock_dir() / f"gpu{i}.lock", "a")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            _held.append(f)
            return i
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(
                f"all {count} GPUs are held by other nondet jobs after {timeout:.0f}s (locks in "
                f"{lock_dir()}); run at most {count} GPU jobs at once (--resources gpu={count})"
            )
        time.sleep(poll)


def release_all() -> None:
    """Drop this process's claims (tests; a job simply exits)."""
    while _held:
        _held.pop().close()
