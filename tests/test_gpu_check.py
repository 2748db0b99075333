"""benchmarks/gpu_check.py, the checks the first GPU must answer: its CPU-capable dry part runs
here (tiny sizes; ~30-45 s on 2 shared cores). On a GPU it prints the same table at ResNet-14
size; nothing here asserts a speed or a float outcome of training."""

import os
import subprocess
import sys

import pytest
from helpers import REPO

pytestmark = pytest.mark.slow  # every test here starts a subprocess


def test_gpu_check_dry_part_prints_every_row_on_cpu():
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/gpu_check.py"), "--quick", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("device: cpu (cpu, compute capability -)")
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")[1]
        for line in out.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| check")
    }
    assert list(rows) == [
        "control, one after another",
        "control, vectorised (vmap)",
        "kernels replicas differ (one process)",
        "bitflip absorbed",
        "cost of determinism",
        "images/s, 4 replicas",
        "images/s, data path",
    ]
    # same machine, same seeds: control replicas are bitwise identical, both ways of training
    assert rows["control, one after another"] == "True"
    assert rows["control, vectorised (vmap)"] == "True"
    assert rows["bitflip absorbed"].endswith("of 2")
