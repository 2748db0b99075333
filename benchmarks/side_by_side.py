"""The default protocol, from an empty results folder to the HTML report, timed side by side for
two versions of this repository on the same machine (medians of repeats, runs interleaved so that
both see the same background load). Prints Markdown for BENCHMARKS.md. Not a test.

    .venv/bin/python benchmarks/side_by_side.py --base 6a78633 [--repeats 3] [--cores 2] [--compare]

``--base`` is any git revision (checked out into a temporary worktree); the other side is this
working tree as it is. Both run with this venv's Python and Snakemake. ``--compare`` also sets the
last repeat's results of the two sides against each other (benchmarks/compare_outputs.py: every
HDF5 dataset bitwise, every shared table column value by value).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_once(repo: Path, cores: int, keep: Path | None = None) -> float:
    """Wall seconds of `snakemake` + `snakemake --report` for ``repo``'s default config; the
    results folder is moved to ``keep`` if given."""
    work = Path(tempfile.mkdtemp(prefix="nondet-bench-"))
    env = {**os.environ, "PYTHONPATH": str(repo)}
    base = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(repo / "Snakefile"),
        "--directory",
        str(work),
        "--configfile",
        str(repo / "config.yaml"),
    ]
    try:
        t0 = time.perf_counter()
        for extra in (["--cores", str(cores)], ["--report", "results/report.html"]):
            # cwd: `python -m` puts the working directory first on sys.path, so run from the empty
            # folder, or every side would import the nondet of wherever this script was started
            out = subprocess.run(base + extra, env=env, capture_output=True, text=True, cwd=work)
            if out.returncode:
                raise RuntimeError(f"{repo}: snakemake failed:\n{out.stderr[-3000:]}")
        seconds = time.perf_counter() - t0
        if keep is not None:
            shutil.rmtree(keep, ignore_errors=True)
            shutil.move(str(work / "results"), str(keep))
        return seconds
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--compare", action="store_true", help="compare the two sides' outputs")
    args = parser.parse_args()
    kept = Path(tempfile.mkdtemp(prefix="nondet-kept-"))
    base_dir = Path(tempfile.mkdtemp(prefix="nondet-base-"))
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(base_dir), args.base],
        check=True,
        capture_output=True,
    )
    times = {"base": [], "ours": []}
    try:
        for i in range(args.repeats):
            for side, repo in (("base", base_dir), ("ours", REPO)):
                last = args.compare and i == args.repeats - 1
                times[side].append(run_once(repo, args.cores, kept / side if last else None))
                print(f"repeat {i + 1}: {side} {times[side][-1]:.1f} s", file=sys.stderr)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base_dir)], capture_output=True)
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"- machine: {cpu}, {os.cpu_count()} CPU cores; --cores {args.cores}")
    print(f"- base {args.base}, ours {head} (+ working tree); {args.repeats} interleaved repeats\n")
    print("| default protocol to HTML report | base | ours | speed-up |")
    print("|---|---|---|---|")
    each = lambda v: ", ".join(f"{t:.0f}" for t in v)  # noqa: E731
    print(
        f"| median wall time (each run, s) | {med['base']:.0f} s ({each(times['base'])}) | "
        f"{med['ours']:.0f} s ({each(times['ours'])}) | {med['base'] / med['ours']:.2f}x |"
    )
    if args.compare:
        print("\nOutputs of the last repeat, base against ours (benchmarks/compare_outputs.py):\n")
        out = subprocess.run(
            [sys.executable, str(REPO / "benchmarks/compare_outputs.py"), str(kept / "base"), str(kept / "ours")],
            capture_output=True,
            text=True,
        )
        print(out.stdout.strip())
    shutil.rmtree(kept, ignore_errors=True)


if __name__ == "__main__":
    main()
