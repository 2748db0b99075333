"""`snakemake --profile gpu` on a real single-node SLURM (loopback, fake GPUs): the jobs go through
the scheduler, GPU jobs ask for and get a GPU, and the results equal a local run's.

Needs Debian's munge, slurmctld, slurmd and slurm-client (`.ci/run` installs them) and root
(slurmd, mknod). Missing binaries FAIL the test; set NONDET_SKIP_SLURM_TEST=1 to skip it
explicitly. Every wait has a timeout; a hung Snakemake gets SIGINT, then SIGKILL.
"""

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from slurm_cluster import SlurmCluster, missing_binaries

pytestmark = pytest.mark.slow  # every test here starts a subprocess

REPO = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 600  # seconds for one Snakemake run

CONFIG = {
    "experiment": "slurm-test",
    "device": "auto",  # CPU here; a GPU where the scheduler grants one that works
    "gpus_per_job": 1,  # GPU jobs ask SLURM for one of the fake GPUs
    "replicas": 2,
    "replicas_per_job": 2,
    "dataset": {"num_samples": 600},
    "training": {"epochs": 2, "batch_size": 64, "eval_every": 1},
    "models": {"cnn": {"arch": "cnn1d", "params": {"channels": 8}, "conditions": ["control", "init"]}},
    "metrics": {"bootstrap_resamples": 200},
}
TARGET = "results/tables/diversity.csv"

if os.environ.get("NONDET_SKIP_SLURM_TEST") == "1":
    pytest.skip("NONDET_SKIP_SLURM_TEST=1", allow_module_level=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = missing_binaries()
    if missing:
        pytest.fail(
            f"SLURM test: {', '.join(missing)} not found. Install Debian's munge slurmctld slurmd "
            "slurm-client (.ci/run does: apt-get install -y munge slurmctld slurmd slurm-client), "
            "or set NONDET_SKIP_SLURM_TEST=1 to skip this test explicitly."
        )
    if os.geteuid() != 0:
        pytest.fail("SLURM test: must run as root (slurmd, mknod of the fake GPU devices)")
    c = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        c.start(timeout=60)
        yield c
    finally:
        try:
            c.run(["scancel", "--user", "root"], check=False, timeout=10)
        finally:
            c.stop()


def run_snakemake(workdir: Path, extra: list[str], env: dict) -> str:
    """Run Snakemake from the repository root (where `--profile gpu` resolves to ./gpu)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        *extra,
        TARGET,
    ]
    env = {**env, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = p.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGINT)  # lets Snakemake cancel its SLURM jobs
        try:
            out, _ = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
        raise AssertionError(f"snakemake did not finish in {RUN_TIMEOUT}s:\n{out[-6000:]}")
    if p.returncode:
        raise AssertionError(f"snakemake failed ({p.returncode}):\n{out[-8000:]}")
    return out


def read_table(path):
    return {(r["model"], r["condition"]): r for r in csv.DictReader(open(path))}


def test_gpu_profile_on_slurm_matches_local_run(cluster, tmp_path):
    site = {  # the profile's site settings, overridden for this cluster
        "NONDET_SLURM_PARTITION": cluster.partition,
        "NONDET_SLURM_ACCOUNT": "",  # no slurmdbd, no accounts
        "NONDET_SLURM_CPU_RUNTIME": "10",
        "NONDET_SLURM_CPU_MEM_MB": "300",
        "NONDET_SLURM_GPU_RUNTIME": "10",
        "NONDET_SLURM_PREDICT_RUNTIME": "5",
        "NONDET_SLURM_GPU_MEM_MB": "1000",
        "NONDET_SLURM_JOBS": "4",
    }
    t0 = time.perf_counter()
    out = run_snakemake(
        tmp_path / "slurm",
        # exactly what a user types, plus: no sacct here (no slurmdbd), poll early
        [
            "--profile",
            "gpu",
            "--slurm-status-command",
            "squeue",
            "--slurm-init-seconds-before-status-checks",
            "1",
        ],
        {**cluster.env, **site},
    )
    slurm_seconds = time.perf_counter() - t0

    # one submission per chunk: train + predict of a chunk are one SLURM job (group `chunk`); the
    # metrics jobs go alone; the table (a local rule) and the dataset rule are not submitted
    submitted = re.findall(r"Job (\S+) has been submitted with SLURM jobid (\d+)", out)  # group: uuid
    assert len(submitted) == 4, out[-4000:]  # 2 chunk groups (train + predict), metrics x2
    fields = "JobID:12,State:12,TimeLimit:12,Comment:100,tres-per-job:30"
    jobs = cluster.run(["squeue", "-h", "-t", "all", "-O", fields]).stdout
    rows, limits = {}, {}
    for line in jobs.splitlines():
        job_id, state, limit, comment, tres = (line.split() + [""])[:5]
        rows[job_id], limits[job_id] = (state, comment, tres), limit
    assert len(rows) == 4, rows  # squeue knows every job this cluster ran: nothing else was
    log = (cluster.root / "slurmctld.log").read_text()
    for _, slurm_id in submitted:
        state, comment, tres = rows[slurm_id]
        assert state == "COMPLETED", rows[slurm_id]
        assert f"Allocate JobId={slurm_id} " in log
        # the chunk groups asked for one GPU (--gpus=1), whatever their job count; the rest none
        is_chunk = comment.startswith("rule_chunk")
        assert tres == ("gres/gpu:1" if is_chunk else "") or ("gpu" in tres) == is_chunk, rows[slurm_id]
        assert not is_chunk or re.search(r"gpu[:=]1$", tres), rows[slurm_id]
    assert sum(c.startswith("rule_chunk") for _, c, _ in rows.values()) == 2, rows
    # a chunk's submission asks for the sum of its jobs' runtimes (GPU_RUNTIME + PREDICT_RUNTIME)
    assert {limits[j] for j, (_, c, _) in rows.items() if c.startswith("rule_chunk")} == {"15:00"}, limits
    assert {limits[j] for j, (_, c, _) in rows.items() if not c.startswith("rule_chunk")} == {"10:00"}, limits
    assert sum("gpu" in tres for _, _, tres in rows.values()) == 2, rows
    assert not any("dataset" in c or "diversity_table" in c for _, c, _ in rows.values()), rows  # local rules
    for chunk in ("control", "init"):  # both files of a chunk were written, each with its log
        assert (tmp_path / "slurm" / f"results/predict/cnn/{chunk}/chunk0.h5").exists()
        assert (tmp_path / "slurm" / f"logs/predict/cnn/{chunk}/chunk0.log").exists()

    t1 = time.perf_counter()
    run_snakemake(tmp_path / "local", ["--cores", "2"], dict(os.environ))
    local_seconds = time.perf_counter() - t1

    slurm_rows = read_table(tmp_path / "slurm" / TARGET)
    local_rows = read_table(tmp_path / "local" / TARGET)
    assert set(slurm_rows) == {("cnn", "control"), ("cnn", "init")}
    assert slurm_rows == local_rows  # same numbers, to the last digit
    assert float(slurm_rows[("cnn", "init")]["disagreement"]) > 0
    print(f"SLURM run {slurm_seconds:.0f}s, local run {local_seconds:.0f}s")
