"""Local GPU claims: concurrent jobs on a multi-GPU machine take different GPUs."""

import os
import subprocess
import sys

import pytest

from nondet.workflow import gpus

pytestmark = pytest.mark.slow  # every test here starts a subprocess


def test_claims_distinct_gpus_and_waits_when_all_taken(tmp_path, monkeypatch):
    monkeypatch.setenv("NONDET_GPU_LOCK_DIR", str(tmp_path))
    try:
        assert gpus.claim_gpu(2) == 0
        # another process sees GPU 0 taken and gets GPU 1
        code = "from nondet.workflow import gpus; print(gpus.claim_gpu(2, timeout=0))"
        env = {"NONDET_GPU_LOCK_DIR": str(tmp_path), "PATH": ""}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
        assert out.stdout.strip() == "1", out.stderr
        assert gpus.claim_gpu(2) == 1  # that process exited: its claim is gone
        with pytest.raises(RuntimeError, match=rf"all 2 GPUs are held .*GPU 0: pid {os.getpid()}.*--resources gpu=2"):
            gpus.claim_gpu(2, timeout=0.1, poll=0.05)
        assert gpus.lock_dir() == tmp_path / f"nondet-gpu-locks-{os.getuid()}"  # per user
    finally:
        gpus.release_all()
    assert gpus.claim_gpu(2) == 0
    gpus.release_all()
