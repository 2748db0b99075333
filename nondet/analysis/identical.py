"""What the replicas did, measured from their outputs rather than read from their flags: pairs of
replicas with bitwise-identical test logits (overall, and within versus across training jobs),
the kernels mode a table states from those counts, and how many one-ulp flips were absorbed.
Used by the metrics stage (nondet.workflow.analysis_stages.metrics); no torch."""

from __future__ import annotations

import hashlib

import numpy as np


def identical_pairs(logits: np.ndarray) -> int:
    """Pairs of replicas whose test logits are bitwise identical: all of them in ``control``,
    none in a condition whose source really varied (a kernels source that produced no
    nondeterminism on this device, or flips all absorbed, would show here)."""

    digests = [hashlib.sha256(np.ascontiguousarray(z).tobytes()).hexdigest() for z in logits]
    counts = {}
    for d in digests:
        counts[d] = counts.get(d, 0) + 1
    return int(sum(c * (c - 1) // 2 for c in counts.values()))


def identical_pairs_by_job(logits: np.ndarray, job_index: np.ndarray) -> dict:
    """Bitwise-identical pairs of replicas trained in the same job and in different jobs, and
    how many pairs there are of each: whether the kernels source moved replicas that shared a
    process (on CUDA, cuDNN's autotuner picks its algorithms once per process)."""
    digests = [hashlib.sha256(np.ascontiguousarray(z).tobytes()).hexdigest() for z in logits]
    out = dict.fromkeys(("pairs_within_jobs", "identical_within_jobs", "pairs_across_jobs", "identical_across_jobs"), 0)
    for i in range(len(digests)):
        for j in range(i + 1, len(digests)):
            where = "within" if job_index[i] == job_index[j] else "across"
            out[f"pairs_{where}_jobs"] += 1
            out[f"identical_{where}_jobs"] += int(digests[i] == digests[j])
    return out


def measured_kernels_mode(row: dict, sources=None) -> str:
    """The kernels mode a table states, from what the replicas did, not from the flags alone:
    when only the kernels source varies (``sources`` == {"kernels"}, or the built-in condition
    ``kernels``) and the replicas asked for nondeterministic kernels, the mode says whether they
    were measured to differ within jobs, only across jobs, or not at all."""
    mode = row["kernels_mode"]
    only_kernels = set(sources) == {"kernels"} if sources is not None else row["condition"] == "kernels"
    if mode == "deterministic" or not only_kernels:
        return mode
    within, across = row["identical_within_jobs"], row["identical_across_jobs"]
    if within + across == 0:
        return mode  # every pair differs: measured nondeterministic
    if within == row["pairs_within_jobs"] and across == row["pairs_across_jobs"]:
        return f"{mode} (measured: no effect, every pair identical)"
    if within == row["pairs_within_jobs"] and within:
        return f"{mode} (measured: identical within a job, differs only across jobs)"
    return f"{mode} (measured: {within + across} identical pairs)"


def absorbed_count(absorbed: np.ndarray) -> float:
    """How many flipped replicas absorbed their flip; NaN when there was no flip to check."""
    absorbed = np.asarray(absorbed)
    if absorbed.size == 0 or (absorbed < 0).any():
        return float("nan")
    return float(absorbed.sum())
