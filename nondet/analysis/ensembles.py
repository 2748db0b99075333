"""k-model ensembles of a condition's replicas: "how many models must I average for run-to-run
noise below X?" (no torch; the ensembles rule, envs/analysis.yaml).

The replicas (in replica order) are split into disjoint groups of k consecutive replicas, for
k = 1, 2, 4, ... as long as at least two groups remain; each group's ensemble averages its
members' logits (as the 2-model ensembles of the pairwise metrics do). Across the groups of one
k: the SD of accuracy and of cross-entropy (ddof 1, as the diversity table), the mean accuracy,
and the disagreement between ensembles (mean over pairs of groups). A k-model ensemble costs k
training runs and k forward passes per test example; a snapshot ensemble or TTA costs one
training run (tables: ``train_runs``, ``test_passes``).
"""

from __future__ import annotations

import numpy as np

from nondet.analysis.metrics import accuracy, cross_entropy, disagreement_matrix, mean_over_pairs


def ensemble_sizes(n_replicas: int) -> list[int]:
    """k = 1, 2, 4, ... with at least two disjoint groups of k among ``n_replicas``."""
    ks, k = [], 1
    while n_replicas // k >= 2:
        ks.append(k)
        k *= 2
    return ks


def make_ensembles(logits: np.ndarray, k: int) -> np.ndarray:
    """(n // k, examples, classes): the mean logits of each group of k consecutive replicas
    (a remainder of fewer than k replicas is left out)."""
    n = (len(logits) // k) * k
    return logits[:n].reshape(n // k, k, *logits.shape[1:]).mean(1, dtype=np.float64).astype(np.float32)


def ensemble_row(ensembles: np.ndarray, labels: np.ndarray) -> dict:
    """Run-to-run variability across the ensembles of one k."""
    acc, ce = accuracy(ensembles, labels), cross_entropy(ensembles, labels)
    return {
        "n_ensembles": len(ensembles),
        "acc_mean": float(acc.mean()),
        "acc_sd": float(np.std(acc, ddof=1)),
        "ce_mean": float(ce.mean()),
        "ce_sd": float(np.std(ce, ddof=1)),
        "disagreement": mean_over_pairs(disagreement_matrix(ensembles)),
    }


def ensemble_notes(df) -> list[str]:
    """The notes under the ensembles table, one per (model, condition): the SD of accuracy at each
    k, and the lowest SD a one-run method (``method`` other than "ensemble") reaches."""
    notes = []
    for (model, condition), g in df.groupby(["model", "condition"], sort=False):
        ens = g[g["method"] == "ensemble"].sort_values("train_runs")
        cheap = g[g["method"] != "ensemble"]
        line = f"{model}/{condition}: SD of accuracy " + ", ".join(
            f"{sd:.3g} % at k = {k}" for k, sd in zip(ens["models_averaged"], ens["acc_sd"])
        )
        if len(cheap):
            best = cheap.loc[cheap["acc_sd"].idxmin()]
            line += f"; with one training run, {best['method']} reaches {best['acc_sd']:.3g} %"
        notes.append(line + f" (ensembles of disjoint groups: {', '.join(map(str, ens['n_ensembles']))} of them).")
    return notes
