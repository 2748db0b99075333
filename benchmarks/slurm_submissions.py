"""SLURM submissions and wall time of the paper DAG's CPU slice under `--profile gpu`, on the
loopback SLURM of tests/test_slurm.py (Debian's munge, slurmctld, slurmd; root; `make slurm`).

The slice is tests/test_cifar.py's: configs/paper.yaml cut to ResNet-14 at width 4, 2 replicas, 2 epochs,
every Table 1 condition and TTA set, on a tiny CIFAR-format stand-in, with the targets
diversity.csv, mitigation.csv and paper_comparison.csv. Prints the sbatch submissions (from
Snakemake's log and from squeue, which must agree), how many of them asked for a GPU, the jobs
Snakemake ran, and the wall time. Not a test.

    .venv/bin/python benchmarks/slurm_submissions.py                 # this checkout
    .venv/bin/python benchmarks/slurm_submissions.py --repo OTHER    # another tree, e.g. an older
                                                                     # commit exported with git archive
    .venv/bin/python benchmarks/slurm_submissions.py --plan configs/paper.yaml  # no SLURM: count the
        # submissions `snakemake -n --profile gpu` plans for a config (group jobs, non-local jobs)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE / "tests"))
from slurm_cluster import SlurmCluster  # noqa: E402
from test_cifar import paper_slice_config, write_tiny_cifar  # noqa: E402

TARGETS = ["results/tables/diversity.csv", "results/tables/mitigation.csv", "results/tables/paper_comparison.csv"]


def local_rules(repo: Path) -> set[str]:
    """Rules that run on the submit host: the Snakefile's localrules list, `localrule: True`, all."""
    text = (repo / "Snakefile").read_text()
    block = re.search(r"^localrules:\n((?:    \w+,?\n)+)", text, re.M)
    out = set(re.findall(r"\w+", block.group(1))) if block else set()
    for path in [repo / "Snakefile", *sorted((repo / "rules").glob("*.smk"))]:
        for chunk in re.split(r"^(?=rule \w+:)", path.read_text(), flags=re.M):
            m = re.match(r"rule (\w+):", chunk)
            if m and re.search(r"^    localrule: True", chunk, re.M):
                out.add(m.group(1))
    return out | {"all"}


def planned_submissions(repo: Path, configfile: Path) -> tuple[int, int, int]:
    """(jobs, sbatch submissions, of which chunk groups) that `snakemake -n --profile gpu` plans."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.yaml").write_text((repo / "config.yaml").read_text())
        cmd = [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(repo / "Snakefile"), "--directory", tmp]
        cmd += ["--profile", "gpu", "--configfile", str(configfile.resolve())]
        out = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600, env={**os.environ})
    text = out.stdout + out.stderr
    if out.returncode:
        sys.exit(text[-4000:])
    groups = len(re.findall(r"Group job \w+ \(jobs in lexicogr. order\):", text))
    top = re.findall(r"^rule (\w+):", text, re.M)  # jobs outside groups (grouped ones are indented)
    jobs = int(re.findall(r"^total\s+(\d+)", text, re.M)[-1])
    local = local_rules(repo)
    return jobs, groups + sum(r not in local for r in top), groups


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=HERE, help="tree whose Snakefile and profiles/gpu run")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--plan", type=Path, help="only count the planned submissions for this config file")
    args = ap.parse_args(argv)
    repo = args.repo.resolve()
    if args.plan:
        jobs, submissions, groups = planned_submissions(repo, args.plan)
        print(f"tree: {repo}\n{args.plan}: {jobs} jobs, {submissions} sbatch submissions ({groups} chunk groups)")
        return
    with tempfile.TemporaryDirectory(prefix="nondet-slurm-bench-") as tmp:
        tmp = Path(tmp)
        md5 = write_tiny_cifar(tmp / "cifar")
        work = tmp / "work"
        work.mkdir()
        (work / "config.yaml").write_text(yaml.safe_dump(paper_slice_config(tmp / "cifar", md5)))
        site = {
            "NONDET_SLURM_PARTITION": "test",
            "NONDET_SLURM_ACCOUNT": "",
            "NONDET_SLURM_CPU_RUNTIME": "30",
            "NONDET_SLURM_CPU_MEM_MB": "300",
            "NONDET_SLURM_GPU_RUNTIME": "30",
            "NONDET_SLURM_PREDICT_RUNTIME": "10",
            "NONDET_SLURM_GPU_MEM_MB": "1000",
            "NONDET_SLURM_JOBS": "4",
        }
        with SlurmCluster(tmp / "slurm") as cluster:
            cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(repo / "Snakefile")]
            cmd += ["--directory", str(work), "--configfile", str(work / "config.yaml"), "--profile", "gpu"]
            cmd += ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1", *TARGETS]
            env = {**cluster.env, **site, "PYTHONPATH": str(repo)}
            t0 = time.perf_counter()
            out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=args.timeout)
            wall = time.perf_counter() - t0
            text = out.stdout + out.stderr
            if out.returncode:
                sys.exit(f"snakemake failed ({out.returncode}):\n{text[-6000:]}")
            submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", text)
            queue = cluster.run(["squeue", "-h", "-t", "all", "-O", "JobID:12,State:12,tres-per-job:30"]).stdout
            rows = [line.split() for line in queue.splitlines()]
            gpu = sum(len(r) > 2 and "gpu" in r[2] for r in rows)
            done = re.search(r"(\d+) of (\d+) steps \(100%\) done", text)
            cluster.run(["scancel", "--user", "root"], check=False)
    print(f"tree: {repo}")
    print(f"sbatch submissions: {len(submitted)} (squeue: {len(rows)}, {gpu} with a GPU)")
    print(f"jobs run by Snakemake: {done.group(2) if done else '?'}")
    print(f"wall time: {wall:.0f} s (cpu cores: {os.cpu_count()}, load average now: {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
