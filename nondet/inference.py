"""Example-level inference for runs scored on the same test set.

Inputs are per-example values, shape (runs, examples): correctness in % (mean = accuracy) or the
negative log-likelihood (mean = cross-entropy), from ``nondet.compare.per_example_values``.

- ``joint_bootstrap``: the multibootstrap (Sellam et al. 2022, MultiBERTs): runs resampled per
  arm (or as seed pairs), test examples resampled *jointly* for both arms (paired by example), so
  the test-set sampling noise the arms share cancels; by default rescaled to the unbiased
  two-way variance (``moment_variance``), as the plain two-way bootstrap is conservative. It
  answers "is the candidate better on the data distribution (a new test set of this size), over
  new training runs?". The run-level tests
  of ``nondet.compare.compare_arms`` keep the test set fixed: "better on *this* test set?".
- ``paired_runs``: runs paired by a shared seed (paired t-test, bootstrap over pairs).
- ``prob_better``: P(candidate run beats baseline run), ties counted half (= Mann-Whitney U / nm).
- ``holm``: Holm-corrected p-values (statsmodels); ``all_pairs`` uses it over every pair of groups.
- ``plan_replicas``: replicas per arm from pilot runs, with the uncertainty of the estimate.

Every random draw comes from a generator seeded by the caller; tests use scipy/statsmodels.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
from scipy import stats

#: Which way is better, per metric of ``per_example_values``.
HIGHER_IS_BETTER = {"accuracy": True, "cross_entropy": False}

QUESTIONS = {
    "welch": "this test set: do new training runs of the candidate score differently? (runs unpaired)",
    "permutation": "this test set, runs unpaired (exact permutation test of the run means)",
    "paired_runs": "this test set: runs paired by a shared seed (paired t-test, bootstrap over pairs)",
    "joint_paired": "the data distribution (a new test set of this size) and new runs; examples "
                    "resampled jointly for both arms (paired by example; multibootstrap, variance-corrected)",
    "joint_unpaired": "reference: as joint_paired but examples resampled independently per arm "
                      "(what ignoring the pairing by example gives)",
    "p_better": "P(a candidate run beats a baseline run on this test set), ties half; "
                "p-value: Mann-Whitney U",
}  # fmt: skip


def moment_variance(a, b, paired_examples: bool = True, paired_runs: bool = False) -> float:
    """Unbiased variance of mean(a) - mean(b) when runs and test examples are both random draws
    (two-way crossed random effects, one value per (run, example)): the variance of the run means
    / runs + the variance of the example means / n - the residual mean square / (runs n), per arm
    (or on a - b when runs are paired). The plain two-way bootstrap adds the residual twice
    instead of once. Never below the run-level part (the fixed-test-set variance)."""

    def ms_residual(x):
        r = x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + x.mean()
        return float((r**2).sum() / ((x.shape[0] - 1) * (x.shape[1] - 1)))

    (ra, n), rb = a.shape, len(b)
    if paired_runs and paired_examples:
        d = a - b
        rows = np.var(d.mean(1), ddof=1) / ra
        return float(max(rows, rows + np.var(d.mean(0), ddof=1) / n - ms_residual(d) / (ra * n)))
    if paired_runs:
        rows = np.var(a.mean(1) - b.mean(1), ddof=1) / ra
    else:
        rows = np.var(a.mean(1), ddof=1) / ra + np.var(b.mean(1), ddof=1) / rb
    if paired_examples:
        cols = np.var(a.mean(0) - b.mean(0), ddof=1) / n
    else:
        cols = (np.var(a.mean(0), ddof=1) + np.var(b.mean(0), ddof=1)) / n
    return float(max(rows, rows + cols - ms_residual(a) / (ra * n) - ms_residual(b) / (rb * n)))


def joint_bootstrap(a, b, n_resamples: int = 10_000, seed: int = 0, alpha: float = 0.05,
                    paired_examples: bool = True, paired_runs: bool = False, correct: bool = True,
                    batch: int = 256) -> dict:  # fmt: skip
    """Bootstrap of mean(a) - mean(b) over runs and test examples.

    ``a`` (runs_a, n), ``b`` (runs_b, n): per-example values of each run. Each resample draws the
    runs of each arm with replacement (the same indices for both arms when ``paired_runs``: row i
    of a and b share a seed) and the n examples with replacement, the same examples for both arms
    when ``paired_examples``. A resample's statistic is weighted by the draw counts, so no copy of
    the data is made. Returns the estimate, the percentile interval at 1 - alpha, the bootstrap
    SE and a two-sided p-value for "no difference" from the bootstrap distribution shifted to the
    null (Hall & Wilson 1991): P(|d* - d| >= |d|), with the +1 correction.

    ``correct`` (default): the draws are rescaled about the estimate so that their variance is
    ``moment_variance`` (needs >= 2 runs per arm). The raw two-way bootstrap counts the
    per-(run, example) noise twice and is conservative (tests/test_inference.py measures both).
    ``distribution`` holds the draws used (rescaled when corrected), ``scale`` the factor.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    (ra, n), (rb, nb) = a.shape, b.shape
    if n != nb:
        raise ValueError(f"the arms have {n} and {nb} examples: not the same test set")
    if paired_runs and ra != rb:
        raise ValueError(f"paired runs need as many runs in each arm ({ra} != {rb})")
    rng = np.random.default_rng(seed)
    estimate = float(a.mean() - b.mean())
    dist = np.empty(n_resamples)
    uniform_n, uniform_a, uniform_b = np.full(n, 1 / n), np.full(ra, 1 / ra), np.full(rb, 1 / rb)
    for start in range(0, n_resamples, batch):
        m = min(batch, n_resamples - start)
        ca = rng.multinomial(ra, uniform_a, size=m)  # (m, runs) draw counts
        cb = ca if paired_runs else rng.multinomial(rb, uniform_b, size=m)
        ea = rng.multinomial(n, uniform_n, size=m)  # (m, n) draw counts of the examples
        eb = ea if paired_examples else rng.multinomial(n, uniform_n, size=m)
        mean_a = ((ca @ a) * ea).sum(1) / (ra * n)
        mean_b = ((cb @ b) * eb).sum(1) / (rb * n)
        dist[start:start + m] = mean_a - mean_b  # fmt: skip
    scale = 1.0
    if correct and min(ra, rb) >= 2 and n >= 2:
        boot_var = np.var(dist, ddof=1)
        if boot_var > 0:
            scale = math.sqrt(moment_variance(a, b, paired_examples, paired_runs) / boot_var)
            dist = estimate + (dist - dist.mean()) * scale
    low, high = np.quantile(dist, [alpha / 2, 1 - alpha / 2])
    extreme = np.sum(np.abs(dist - estimate) >= abs(estimate))
    return {
        "estimate": estimate,
        "ci_low": float(low),
        "ci_high": float(high),
        "se": float(np.std(dist, ddof=1)),
        "p_value": float((1 + extreme) / (1 + n_resamples)),
        "scale": scale,
        "distribution": dist,
    }


def _p_better_statistic(a, b, axis=-1):
    """P(A > B) + P(A = B) / 2 over all (run of a, run of b) pairs; vectorised for bootstrap."""
    a = np.moveaxis(np.asarray(a), axis, -1)[..., :, None]
    b = np.moveaxis(np.asarray(b), axis, -1)[..., None, :]
    return (a > b).mean((-2, -1)) + 0.5 * (a == b).mean((-2, -1))


def prob_better(candidate, baseline, higher_is_better: bool = True, n_resamples: int = 10_000,
                seed: int = 0, alpha: float = 0.05) -> dict:  # fmt: skip
    """P(a candidate run beats a baseline run) with a percentile bootstrap interval (runs
    resampled per arm, scipy.stats.bootstrap) and the Mann-Whitney U p-value.

    Equals U / (n m) of ``scipy.stats.mannwhitneyu(candidate, baseline)`` when higher is better
    (a test checks it)."""
    sign = 1.0 if higher_is_better else -1.0
    a = sign * np.asarray(candidate, dtype=np.float64)
    b = sign * np.asarray(baseline, dtype=np.float64)
    estimate = float(_p_better_statistic(a, b))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate (all pairs won) is a valid answer: [1, 1]
        boot = stats.bootstrap((a, b), _p_better_statistic, n_resamples=n_resamples,
                               confidence_level=1 - alpha, method="percentile", vectorized=True,
                               rng=np.random.default_rng(seed))  # fmt: skip
        mw = stats.mannwhitneyu(a, b, alternative="two-sided")
    return {
        "estimate": estimate,
        "ci_low": float(boot.confidence_interval.low),
        "ci_high": float(boot.confidence_interval.high),
        "p_value": float(mw.pvalue),
    }


def paired_runs(candidate, baseline, n_resamples: int = 10_000, seed: int = 0,
                alpha: float = 0.05) -> dict:  # fmt: skip
    """Runs paired by seed (row i of each arm shares a seed): mean of the differences, its
    percentile bootstrap interval over pairs, and the paired t-test (scipy.stats.ttest_rel)."""
    a, b = np.asarray(candidate, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    d = a - b
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        boot = stats.bootstrap((d,), np.mean, n_resamples=n_resamples, confidence_level=1 - alpha,
                               method="percentile", vectorized=True,
                               rng=np.random.default_rng(seed))  # fmt: skip
        t = stats.ttest_rel(a, b)
    return {
        "estimate": float(d.mean()),
        "ci_low": float(boot.confidence_interval.low),
        "ci_high": float(boot.confidence_interval.high),
        "p_value": float(t.pvalue),
    }


def holm(p_values) -> np.ndarray:
    """Holm-corrected p-values (statsmodels.stats.multitest.multipletests); NaNs stay NaN."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def compare_per_example(baseline: dict, candidate: dict, alpha: float = 0.05,
                        n_resamples: int = 10_000, seed: int = 0, pairs=None) -> list[dict]:  # fmt: skip
    """Every test of a candidate against a baseline, one row per (metric, test), long format.

    ``baseline``/``candidate``: metric -> per-example values (runs, n). ``pairs``: optional list
    of (candidate row, baseline row) sharing a seed. Adds ``p_holm``: Holm over the metrics, per
    test. ``estimate`` is candidate - baseline (P(candidate better) for p_better).
    """
    from .compare import compare_arms

    rows = []
    for j, metric in enumerate(baseline):
        a, b = np.asarray(candidate[metric]), np.asarray(baseline[metric])
        runs_a, runs_b = a.mean(1), b.mean(1)
        s = seed + 10 * j  # nondet.runs.compare_stage draws its figure with the same seed
        base = {"metric": metric, "n_baseline": len(b), "n_candidate": len(a), "n_examples": a.shape[1]}
        unpaired = compare_arms(runs_b, runs_a, alpha=alpha, n_resamples=n_resamples, seed=s)
        ci = (unpaired["ci_low"], unpaired["ci_high"])
        rows.append({**base, "test": "welch", "estimate": unpaired["diff"], "ci_low": ci[0],
                     "ci_high": ci[1], "p_value": unpaired["welch_p"]})  # fmt: skip
        rows.append({**base, "test": "permutation", "estimate": unpaired["diff"], "ci_low": ci[0],
                     "ci_high": ci[1], "p_value": unpaired["permutation_p"]})  # fmt: skip
        if pairs is not None:
            ia, ib = np.asarray(pairs).T
            res = paired_runs(runs_a[ia], runs_b[ib], n_resamples, s + 1, alpha)
            rows.append({**base, "n_baseline": len(ib), "n_candidate": len(ia), "test": "paired_runs", **res})
        for test, paired_ex in (("joint_paired", True), ("joint_unpaired", False)):
            if pairs is not None and test == "joint_paired":
                ia, ib = np.asarray(pairs).T
                res = joint_bootstrap(a[ia], b[ib], n_resamples, s + 2, alpha, True, paired_runs=True)
            else:
                res = joint_bootstrap(a, b, n_resamples, s + 3, alpha, paired_ex)
            res.pop("distribution")
            rows.append({**base, "test": test, **{k: res[k] for k in ("estimate", "ci_low", "ci_high", "p_value")},
                         "se": res["se"]})  # fmt: skip
        res = prob_better(runs_a, runs_b, HIGHER_IS_BETTER[metric], n_resamples, s + 4, alpha)
        rows.append({**base, "test": "p_better", **res})
    for test in dict.fromkeys(r["test"] for r in rows):
        sub = [r for r in rows if r["test"] == test]
        for r, p in zip(sub, holm([r["p_value"] for r in sub])):
            r["p_holm"] = float(p)
    for r in rows:
        r["question"] = QUESTIONS[r["test"]]
    return rows


def all_pairs(groups: dict, alpha: float = 0.05, n_resamples: int = 10_000, seed: int = 0) -> list[dict]:
    """Every unordered pair of groups (second minus first, in the given order) on every metric:
    Welch, the joint paired bootstrap and P(second beats first), with Holm-corrected p-values over
    the whole family (all pairs x metrics) of each test.

    ``groups``: name -> metric -> per-example values (runs, n), all on the same test set.
    """
    from .compare import compare_arms

    rows = []
    for k, (g1, g2) in enumerate(itertools.combinations(groups, 2)):
        for j, metric in enumerate(groups[g1]):
            a, b = np.asarray(groups[g2][metric]), np.asarray(groups[g1][metric])
            s = seed + 100 * k + 10 * j
            base = {"baseline": g1, "candidate": g2, "metric": metric}
            w = compare_arms(b.mean(1), a.mean(1), alpha=alpha, n_resamples=min(n_resamples, 2000), seed=s)
            rows.append({**base, "test": "welch", "estimate": w["diff"], "ci_low": w["ci_low"],
                         "ci_high": w["ci_high"], "p_value": w["welch_p"]})  # fmt: skip
            jb = joint_bootstrap(a, b, n_resamples, s + 1, alpha, True)
            keys = ("estimate", "ci_low", "ci_high", "p_value")
            rows.append({**base, "test": "joint_paired", **{k2: jb[k2] for k2 in keys}})
            pb = prob_better(a.mean(1), b.mean(1), HIGHER_IS_BETTER[metric], n_resamples, s + 2, alpha)
            rows.append({**base, "test": "p_better", **pb})
    for test in dict.fromkeys(r["test"] for r in rows):
        sub = [r for r in rows if r["test"] == test]
        for r, p in zip(sub, holm([r["p_value"] for r in sub])):
            r["p_holm"] = float(p)
    for r in rows:
        r["question"] = QUESTIONS[r["test"]]
    return rows


PLAN_ASSUMPTIONS = (
    "two-sided two-sample t-test on per-run means at alpha with equal SD in both arms; runs "
    "independent and normal around their arm's mean; the question is 'on this test set'. "
    "pilot_sd: pooled run-to-run SD of the pilots, interval = chi-square interval of a normal SD "
    "(df = pilot runs - 2). indep_only: the SD independent per-example flips alone give (per-"
    "example variances over pilot runs; interval from their spread over examples); it assumes no "
    "shared component, so it is a lower bound on the SD and on the replicas needed."
)


def plan_replicas(baseline, candidate, effect: float, alpha: float = 0.05, power: float = 0.8,
                  confidence: float = 0.95) -> list[dict]:  # fmt: skip
    """Replicas per arm needed to detect ``effect`` (candidate - baseline, in the metric's units),
    from pilot runs' per-example values (runs, n) of each arm, on two bases (pilot SD and the
    finite-test-set part alone), each with an interval for the SD and the replicas at its ends."""
    from .compare import replicas_needed

    a, b = np.asarray(candidate, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    (ra, n), rb = a.shape, len(b)
    df = ra + rb - 2
    if df < 1:
        raise ValueError("planning needs at least 3 pilot runs in all (2 in one arm)")
    pooled = ((ra - 1) * np.var(a.mean(1), ddof=1) + (rb - 1) * np.var(b.mean(1), ddof=1)) / df
    sd = math.sqrt(pooled)
    q = (1 - confidence) / 2
    sd_int = (sd * math.sqrt(df / stats.chi2.ppf(1 - q, df)), sd * math.sqrt(df / stats.chi2.ppf(q, df)))
    # per example: variance over runs pooled within arms; its mean / n is the test-set part
    v = ((ra - 1) * np.var(a, axis=0, ddof=1) + (rb - 1) * np.var(b, axis=0, ddof=1)) / df
    part, part_se = v.mean() / n, v.std(ddof=1) / math.sqrt(n) / n
    z = stats.norm.ppf(1 - q)
    ts = math.sqrt(part)
    ts_int = (math.sqrt(max(0.0, part - z * part_se)), math.sqrt(part + z * part_se))
    rows = []
    for basis, s, (lo, hi) in (("pilot_sd", sd, sd_int), ("indep_only", ts, ts_int)):
        rows.append({
            "basis": basis, "pilot_runs_baseline": rb, "pilot_runs_candidate": ra, "effect": effect,
            "sd": s, "sd_low": lo, "sd_high": hi,
            "replicas_needed": replicas_needed(effect, s, alpha, power),
            "replicas_low": replicas_needed(effect, lo, alpha, power) if lo > 0 else 2,
            "replicas_high": replicas_needed(effect, hi, alpha, power),
            "indep_share": part / pooled if pooled > 0 else float("nan"),
            "alpha": alpha, "power": power, "confidence": confidence,
            "assumptions": PLAN_ASSUMPTIONS,
        })  # fmt: skip
    return rows
