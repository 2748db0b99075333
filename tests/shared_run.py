"""One small finished workflow run that the slow tests share (not a test file itself).

The ``tiny_run`` fixture (tests/conftest.py) builds the run of ``TINY`` once per pytest session,
even across pytest-xdist workers: the first test that needs it builds it under an exclusive lock
in a folder the workers share; the others wait on the lock, then read the same folder. A failed
build is recorded there too, so every test that needs the run fails with its message instead of
building it again or waiting.

The run is read-only for its users: a test may read its files and dry-run Snakemake in it
(``dry_run`` writes the config file into the test's own folder), but one that changes a file or
runs a job works on ``copy_run(tiny_run, tmp_path / "run")``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import helpers
import pytest

#: One config that stands in for two shipped ones (tests/test_config_dags.py's RUN_ELSEWHERE,
#: checked by tests/test_workflow.py): its DAG has exactly the rules of configs/compare_example.yaml
#: (config.yaml's with a comparison and a factorial design) and trains every kind that config.yaml's
#: reduction keeps: per architecture (cnn1d with dropout layers, linear, mlp) each kind of condition,
#: the three mitigation methods, the three kinds of twin and the stability sweep's families.
TINY = {
    "experiment": "tiny",
    "replicas": 3,
    "replicas_per_job": 2,  # two jobs per condition: exercises chunking
    "dataset": {"num_samples": 600},
    "training": {"epochs": 2, "batch_size": 64, "eval_every": 1},
    "models": {
        "cnn": {
            "arch": "cnn1d",
            "params": {"channels": 8, "kernels": [5, 3, 3], "dropout": 0.1},
            "conditions": ["control", "dropout", "all", "bitflip"],
        },
        "linear": {"arch": "linear", "conditions": ["control", "bitflip"]},
        "mlp": {"arch": "mlp", "params": {"hidden": 16}, "conditions": ["bitflip"]},
    },
    "metrics": {"bootstrap_resamples": 200},
    "divergence": {"models": ["cnn"], "twins": {"bitflip": 1, "init": 1, "shuffle": 1}, "record_points": 6},
    "stability": {"models": ["linear", "mlp", "cnn"]},
    "mitigation": {
        "models": ["cnn"],
        "conditions": ["all"],
        "methods": ["snapshot", "ema", "swa"],
        "snapshot_cycles": 2,
        "tta": {"kind": "shift", "size": 1, "stride": 1},
    },
    # compare_example's first comparison (3 runs per arm instead of 8)
    "comparisons": {
        "lr": {
            "model": "cnn",
            "replicas": 3,
            "condition": "all",
            "baseline": {},
            "candidate": {"training": {"lr": 0.1}},
        }
    },
    "factorial": {"grid": {"model": "cnn", "sources": ["init", "shuffle"], "levels": 2, "bootstrap_resamples": 200}},
}

#: What the shared run asks for: config.yaml's and compare_example's targets (test_config_dags.run_targets).
TARGETS = ("all", "results/tables/paper_comparison.csv")
#: The HTML report ``tiny_run`` builds (``snakemake --report``), relative to the run's folder.
REPORT = "results/report.html"
#: The run's Snakemake output (stdout and stderr), saved for test_workflow's DAG checks.
OUTPUT = "snakemake-output.txt"


def build_tiny(work: Path) -> None:
    """The whole workflow on ``TINY``, then its HTML report."""
    out = helpers.snakemake(work, "--cores", "2", *TARGETS, config=TINY)
    (work / OUTPUT).write_text(out.stdout + out.stderr)
    helpers.snakemake(work, "--report", REPORT, *TARGETS, config=TINY)


def shared_dir(tmp_path_factory) -> Path:
    """A folder every process of this pytest session sees: under pytest-xdist each worker's
    base temporary folder is ``<session's>/popen-gwN``, so their parent; without xdist the
    session's own base folder (its parent holds earlier sessions' folders)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def shared_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """``<shared folder>/<name>``, made by ``build`` once per session in whichever process asks
    first; the others block on ``<name>.lock`` until it is made. If ``build`` raised, it is not
    retried: every caller fails with the error, recorded in ``<name>.failed``."""
    root = shared_dir(tmp_path_factory)
    work, done, failed = root / name, root / f"{name}.done", root / f"{name}.failed"
    with open(root / f"{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        try:
            if failed.exists():
                pytest.fail(f"the shared run {work} failed to build:\n{failed.read_text()}", pytrace=False)
            if not done.exists():
                shutil.rmtree(work, ignore_errors=True)  # a builder killed half-way left it
                work.mkdir()
                try:
                    build(work)
                except BaseException as e:
                    failed.write_text(f"{type(e).__name__}: {e}")
                    raise
                done.touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return work


def copy_run(run: Path, dest: Path) -> Path:
    """A copy of a finished run that a test may change: file times kept (``copy2``), so
    Snakemake in the copy plans nothing until the test changes something."""
    shutil.copytree(run, dest, copy_function=shutil.copy2, ignore=shutil.ignore_patterns("locks", "iocache"))
    return dest


def dry_run(run: Path, tmp_path: Path, *args, config: dict = TINY, check: bool = True):
    """``snakemake -n`` in ``run`` without writing into it: ``config`` goes to ``tmp_path``.
    (The Snakefile's ``configfile: "config.yaml"`` still reads the run's own, TINY; the given
    config is merged over it, so give TINY or a TINY with keys changed, not keys removed.)"""
    cfg = tmp_path / "config.yaml"
    return helpers.snakemake(run, "-n", *args, config=config, check=check, configfile=cfg)
