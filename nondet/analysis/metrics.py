"""Diversity metrics over a group of replicas (docs/protocol.md §2).

Shapes: ``logits`` (m models, n examples, k classes), ``labels`` (n,), ``features`` (m, n, d).
Pairwise metrics are (m, m) matrices computed with matrix operations; a condition's value is the
mean over unordered pairs i < j. Uncertainty is a bootstrap over *models* (scipy.stats.bootstrap):
resample model indices with replacement and average the pair matrix over pairs of distinct models.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import special, stats

PAIR_METRICS = ("disagreement", "pearson", "spearman", "ens_acc_gain", "ens_ce_gain", "cka")


def accuracy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Accuracy in percent of each model; logits (..., n, k)."""
    return 100.0 * (logits.argmax(-1) == labels).mean(-1)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean negative log-likelihood of softmax(logits) of each model; logits (..., n, k)."""
    logp = special.log_softmax(np.asarray(logits, dtype=np.float64), axis=-1)
    index = np.broadcast_to(labels, logp.shape[:-1])[..., None]
    return -np.take_along_axis(logp, index, axis=-1)[..., 0].mean(-1)


def disagreement_matrix(logits: np.ndarray) -> np.ndarray:
    """% of examples whose argmax differs, for every pair; via one-hot inner products."""
    m, n, k = logits.shape
    onehot = np.zeros((m, n, k), dtype=np.float32)
    np.put_along_axis(onehot, logits.argmax(-1)[..., None], 1.0, axis=-1)
    flat = onehot.reshape(m, n * k)
    return 100.0 * (1.0 - (flat @ flat.T) / n)


def correlation_matrices(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson and Spearman correlation of the flattened logit matrices, for every pair."""
    flat = np.asarray(logits, dtype=np.float64).reshape(len(logits), -1)
    pearson = np.atleast_2d(np.corrcoef(flat))
    spearman = np.atleast_2d(np.corrcoef(stats.rankdata(flat, axis=1)))
    return pearson, spearman


def _lse_and_argmax(z2: np.ndarray):
    """For z2 = z_i + z_j of shape (p, k, n): logsumexp of z2 / 2 and argmax over classes.

    Classes on the middle axis keep every reduction elementwise over contiguous examples (numpy
    reduces a short last axis slowly); argmax is the first class attaining the maximum.
    """
    top = z2.max(1)
    arg = np.full(top.shape, z2.shape[1] - 1)
    for c in range(z2.shape[1] - 2, -1, -1):
        arg[z2[:, c] == top] = c
    half_top = 0.5 * top
    shifted = 0.5 * z2 - half_top[:, None, :]
    np.exp(shifted, out=shifted)
    return half_top + np.log(shifted.sum(1)), arg


def ensemble_gain_matrices(logits: np.ndarray, labels: np.ndarray):
    """Gain of the 2-model ensemble (mean of the two logit matrices) over its members' average.

    Accuracy gain in percentage points (ensemble - mean member); cross-entropy gain as
    mean member CE - ensemble CE, so that positive means the ensemble is better on both.
    CE = mean(logsumexp(z) - z[label]); the label term is separable per model, only the
    logsumexp is computed per pair (float32). Members go through the same arithmetic, so two
    identical models have a gain of exactly 0.
    """
    logits = np.asarray(logits, dtype=np.float32)
    m, n, _ = logits.shape
    by_class = np.ascontiguousarray(logits.transpose(0, 2, 1))  # (m, k, n)
    at_label = np.take_along_axis(by_class, np.broadcast_to(labels, (m, n))[:, None, :], 1)
    mean_at_label = at_label[:, 0].astype(np.float64).mean(-1)  # (m,)
    lse, arg = _lse_and_argmax(2 * by_class)
    ce = lse.mean(-1, dtype=np.float64) - mean_at_label
    acc = 100.0 * (arg == labels).mean(-1)
    acc_gain, ce_gain = np.zeros((m, m)), np.zeros((m, m))
    for i in range(m - 1):  # vectorised over j > i; an m x m x n x k tensor would not fit
        lse, arg = _lse_and_argmax(by_class[i][None] + by_class[i + 1 :])
        ens_ce = lse.mean(-1, dtype=np.float64) - 0.5 * (mean_at_label[i] + mean_at_label[i + 1 :])
        ens_acc = 100.0 * (arg == labels).mean(-1)
        a = ens_acc - 0.5 * (acc[i] + acc[i + 1 :])
        c = 0.5 * (ce[i] + ce[i + 1 :]) - ens_ce
        acc_gain[i, i + 1 :] = acc_gain[i + 1 :, i] = a
        ce_gain[i, i + 1 :] = ce_gain[i + 1 :, i] = c
    return acc_gain, ce_gain


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) between feature matrices x (n, d1) and y (n, d2)."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x, axis=0, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64) - np.mean(y, axis=0, dtype=np.float64)
    cross = np.linalg.norm(y.T @ x) ** 2
    return float(cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def cka_matrix(features: np.ndarray) -> np.ndarray:
    """Linear CKA for every pair from one Gram matrix of all models' centred features."""
    m, n, d = features.shape
    f = np.asarray(features, dtype=np.float64)
    f = f - f.mean(axis=1, keepdims=True)
    stacked = f.transpose(1, 0, 2).reshape(n, m * d)
    gram = (stacked.T @ stacked).reshape(m, d, m, d)
    sq = np.einsum("iajb,iajb->ij", gram, gram)  # ||X_i^T X_j||_F^2
    norms = np.sqrt(np.diag(sq))
    with np.errstate(invalid="ignore", divide="ignore"):
        return sq / np.outer(norms, norms)


def pairwise_matrices(logits: np.ndarray, labels: np.ndarray, features=None) -> dict:
    pearson, spearman = correlation_matrices(logits)
    acc_gain, ce_gain = ensemble_gain_matrices(logits, labels)
    out = {
        "disagreement": disagreement_matrix(logits),
        "pearson": pearson,
        "spearman": spearman,
        "ens_acc_gain": acc_gain,
        "ens_ce_gain": ce_gain,
    }
    if features is not None:
        out["cka"] = cka_matrix(features)
    return out


def mean_over_pairs(matrix: np.ndarray) -> float:
    iu = np.triu_indices(len(matrix), k=1)
    return float(np.mean(matrix[iu])) if len(iu[0]) else float("nan")


def _pair_statistic(matrix: np.ndarray):
    """Statistic for scipy.stats.bootstrap over model indices: mean over distinct-model pairs."""

    def statistic(idx, axis=-1):
        idx = np.moveaxis(np.asarray(idx, dtype=np.int64), axis, -1)
        sub = matrix[idx[..., :, None], idx[..., None, :]]
        m = idx.shape[-1]
        upper = np.triu(np.ones((m, m), dtype=bool), k=1)
        mask = upper & (idx[..., :, None] != idx[..., None, :])
        count = mask.sum((-1, -2))
        total = np.where(mask, sub, 0.0).sum((-1, -2))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    return statistic


def bootstrap_se(data: np.ndarray, statistic, n_resamples: int, seed: int, batch=None) -> float:
    """Bootstrap standard error of ``statistic`` over the models in ``data`` (scipy.stats);
    ``batch`` resamples are evaluated at once (default: bounded for m x m pair matrices)."""
    if len(data) < 2 or n_resamples == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate data (e.g. control) is expected and fine
        res = stats.bootstrap(
            (data,),
            statistic,
            n_resamples=n_resamples,
            vectorized=True,
            method="percentile",
            batch=batch or max(1, min(n_resamples, 2_000_000 // max(1, len(data) ** 2))),
            rng=np.random.default_rng(seed),
        )
    return float(np.nanstd(res.bootstrap_distribution, ddof=1))


def accuracy_variance_split(logits: np.ndarray, labels: np.ndarray, n_resamples: int = 0, seed: int = 0) -> dict:
    """Split the variance of accuracy across replicas (in %^2, ddof=1) into two exact parts.

    With c[r, i] = 1 when replica r gets example i right, Var_r(acc) = (1/n^2) sum_ij Cov(c_i, c_j):
    - ``acc_var_indep`` = (1/n^2) sum_i Var(c_i): the variance that independent per-example flips
      would give (each example flipping on its own, as if a coin per example). It shrinks as 1/n
      and vanishes for an infinite test set; it is *not* the test-set sampling error of an
      accuracy (see ``acc_sd_binomial``);
    - ``acc_var_shared`` = the rest, the covariance between examples: replicas better or worse on
      many examples at once. This part stays however large the test set.
    ``*_se``: bootstrap standard errors over replicas (``n_resamples`` > 0); with 8 replicas a
    variance's SE is about half its value, so read a part as clear only when it exceeds ~2 SE.
    ``acc_sd_binomial`` = sqrt(p(1-p)/n) is the test-set sampling SD of one model's accuracy:
    how far it would move on another test set of n examples from the same distribution. All
    replicas share the test set, so it is not part of the run-to-run variance above.
    """
    correct = (np.asarray(logits).argmax(-1) == labels).astype(np.float64)  # (m, n)
    m, n = correct.shape
    acc = correct.mean(1)

    hits, gram = correct.sum(1), correct @ correct.T  # per replica; shared hits per pair

    def parts(idx, axis=-1):
        """(total, indep) for replica index resamples idx (..., m), from how often each replica
        is drawn: for 0/1 values the ddof=1 variance of example i over k draws is
        k/(k-1) p_i (1 - p_i), and sum_i p_i (1 - p_i) = (c.hits)/k - (c' G c)/k^2 with c the
        draw counts and G the Gram matrix of correctness, so no (resamples x n) array is made."""
        idx = np.moveaxis(np.asarray(idx, dtype=np.int64), axis, -1)
        flat = idx.reshape(-1, idx.shape[-1])
        k = flat.shape[-1]
        counts = np.stack([(flat == r).sum(-1) for r in range(m)], axis=-1).astype(np.float64)
        spread = counts @ hits / k - np.einsum("bi,ij,bj->b", counts, gram, counts) / k**2
        indep = (k / (k - 1)) * spread / n**2
        total = np.var(acc[flat], axis=-1, ddof=1)
        return 1e4 * total.reshape(idx.shape[:-1]), 1e4 * indep.reshape(idx.shape[:-1])

    if m > 1:
        total, indep = (float(v) for v in parts(np.arange(m)))
    else:
        total = indep = np.nan
    p = correct.mean()
    out = {
        "acc_var": total,
        "acc_var_indep": indep,
        "acc_var_shared": total - indep,
        "acc_sd_binomial": 100.0 * np.sqrt(p * (1 - p) / n),
    }
    stats_of = {
        "acc_var": lambda idx, axis=-1: parts(idx, axis)[0],
        "acc_var_indep": lambda idx, axis=-1: parts(idx, axis)[1],
        "acc_var_shared": lambda idx, axis=-1: np.subtract(*parts(idx, axis)),
    }
    batch = max(1, min(n_resamples, 4_000_000 // (n + m)))
    for j, (name, stat) in enumerate(stats_of.items()):
        out[f"{name}_se"] = bootstrap_se(np.arange(m), stat, n_resamples, seed + j, batch=batch)
    return out


def _sd(x, axis=-1):
    return np.std(x, axis=axis, ddof=1)


def sd_interval(x, confidence: float = 0.95) -> tuple[float, float]:
    """Chi-square interval of the SD of normal values: exact under normal runs. The bootstrap
    ``*_sd_se`` beside it is too small at a few replicas (SD +- SE covered ~81 %), so the table's
    ``acc_sd_low``/``acc_sd_high`` (and ``ce_sd_*``) are the interval to read."""
    x = np.asarray(x, dtype=np.float64)
    df = len(x) - 1
    if df < 1:
        return float("nan"), float("nan")
    sd, q = float(np.std(x, ddof=1)), (1 - confidence) / 2
    return sd * math.sqrt(df / stats.chi2.ppf(1 - q, df)), sd * math.sqrt(df / stats.chi2.ppf(q, df))


def summarize(logits, labels, features=None, n_resamples=10_000, seed=0) -> dict:
    """One row of the diversity table for a group of replicas."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    m = len(logits)
    acc, ce = accuracy(logits, labels), cross_entropy(logits, labels)
    row = {
        "n_replicas": m,
        "acc_mean": float(acc.mean()),
        "acc_sd": float(_sd(acc)) if m > 1 else float("nan"),
        "acc_sd_se": bootstrap_se(acc, _sd, n_resamples, seed),
        "ce_mean": float(ce.mean()),
        "ce_sd": float(_sd(ce)) if m > 1 else float("nan"),
        "ce_sd_se": bootstrap_se(ce, _sd, n_resamples, seed + 1),
    }
    for name, x in (("acc_sd", acc), ("ce_sd", ce)):
        row[f"{name}_low"], row[f"{name}_high"] = sd_interval(x)
    split = accuracy_variance_split(logits, labels, n_resamples, seed + 2 + len(PAIR_METRICS))
    row.update({k: float(v) for k, v in split.items()})
    matrices = pairwise_matrices(logits, labels, features)
    index = np.arange(m)
    for j, name in enumerate(PAIR_METRICS):
        if name not in matrices:
            row[name] = row[f"{name}_se"] = float("nan")
            continue
        row[name] = mean_over_pairs(matrices[name])
        row[f"{name}_se"] = bootstrap_se(index, _pair_statistic(matrices[name]), n_resamples, seed + 2 + j)
    return row, {"accuracy": acc, "cross_entropy": ce, **matrices}


def cka_on(model_spec: dict) -> str:
    """What the CKA column compares: penultimate features, or the logits (a linear model, or a
    user model without a ``features`` module)."""
    if ":" in model_spec["arch"]:
        return "features" if model_spec.get("features") else "logits"
    return "logits" if model_spec["arch"] == "linear" else "features"
