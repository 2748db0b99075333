"""Helpers shared by the tests that run the real workflow (not a test file itself)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
# each rule's code hash, kept across the tests' Snakemake runs (nondet.workflow.codehash): named by
# the bytes of the package, so an edit between runs misses it
CODEHASH_CACHE = REPO / ".pytest_cache" / "nondet-codehash"


def default_config() -> dict:
    """The repository's config.yaml, read wherever pytest runs from."""
    with open(REPO / "config.yaml") as f:
        return yaml.safe_load(f)


def snakemake(workdir, *args, config: dict, check: bool = True, configfile: Path | None = None):
    """Run the real Snakefile in ``workdir`` with ``config`` written as its config file: to
    ``workdir/config.yaml``, or to ``configfile`` (a dry run in a shared run, tests/shared_run.py)."""
    cfg_path = Path(workdir) / "config.yaml" if configfile is None else Path(configfile)
    cfg_path.write_text(yaml.safe_dump(config))
    cmd = SNAKEMAKE + ["--directory", str(workdir), "--configfile", str(cfg_path), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "NONDET_CODEHASH_CACHE": str(CODEHASH_CACHE)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if check and out.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{out.stdout[-4000:]}\n{out.stderr[-8000:]}")
    return out


def planned_outputs(out) -> set[str]:
    """Output files of the jobs a dry run plans (rule `all` has none)."""
    text = out.stdout + out.stderr
    return {p for line in re.findall(r"^\s+output: (.*)$", text, re.M) for p in line.split(", ")}
