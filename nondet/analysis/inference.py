"""The verdict engine: "is the candidate really better?", for runs scored on one test set.

One engine behind every comparison, whether the runs were trained by the pipeline
(``comparisons:``) or imported (``runs.comparisons:``). Inputs are per-example values, shape
(runs, examples), per metric: correctness in % (mean = accuracy) or the negative log-likelihood
(mean = cross-entropy), from ``nondet.analysis.variance.per_example_values``.

Every p-value and interval is calibrated at the run counts people have (2-8 per arm):
``benchmarks/calibration.py`` measures size and coverage by simulation, and its table is in
docs/comparisons.md. Tests (rows of ``compare``):

- ``welch``: this test set, runs unpaired: Welch's t-test on the run means, with its t interval
  (Welch-Satterthwaite degrees of freedom; scipy.stats.ttest_ind).
- ``paired_runs``: this test set, runs paired by a shared seed: paired t-test and t interval.
- ``permutation``: this test set, exact permutation test of the run means (p-value only; its
  smallest reachable p is stated: 2 / C(2R, R), 1/3 with 2 runs per arm); above
  ``PERMUTATION_EXACT_MAX`` arrangements a seeded Monte-Carlo test (floor 2 / (resamples + 1)).
- ``joint_paired``: the data distribution (a new test set of this size) and new runs: the
  unbiased two-way variance (run means, example means, interaction; ``moment_variance``) read with
  a t quantile whose degrees of freedom come from its mean squares (Satterthwaite). Examples are
  paired (the arms share the test set). ``joint_unpaired``: the same, ignoring the pairing by
  example (a reference: what treating the test sets as independent gives).
- ``p_better``: P(a candidate run beats a baseline run), ``nondet.analysis.prob_better``: the
  estimate is rliable's probability of improvement (all pairs of runs, ties half: Mann-Whitney
  U / nm); paired by seed, Bouthillier et al.'s (the share of seed pairs the candidate wins). Its
  interval is the union of a normal-model interval and rank-based ones (paired: an exact sign
  interval), its p the largest of theirs, so that it holds when runs diverge or are skewed.
- ``tost``: equivalence (two one-sided tests) or non-inferiority at a margin, on the welch
  (paired_runs) statistic.
- ``fixes`` / ``regressions``: per-example flips between arms, for accuracy: the examples a
  baseline run gets wrong and a candidate run right (and the reverse), averaged over run pairs,
  with a t interval from the two-sample U-statistic variance.

``nondet.analysis.verdict`` reads the rows into one decision per metric (the difference test
and P(A > B) must both reject; Bouthillier et al.'s three outcomes) and its sentences;
``nondet.analysis.planning`` gives replicas per arm. Arrays may also be run scores (runs,) from
a table of final scores (``python -m nondet verdict``): then the per-example tests are left out.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings

import numpy as np
from scipy import stats

from nondet.analysis.prob_better import p_better
from nondet.analysis.rows import (  # noqa: F401 (the engine's names, one import away)
    RESIDUE,
    VerdictError,
    add_holm,
    degenerate,
    holm,
    row,
    scale_of,
    t_row,
    zero,
)

#: Which way is better, per metric of ``per_example_values``.
HIGHER_IS_BETTER = {"accuracy": True, "cross_entropy": False}

QUESTIONS = {
    "welch": "this test set: do new training runs of the candidate score differently? (runs unpaired; Welch t)",
    "paired_runs": "this test set: runs paired by a shared seed (paired t)",
    "permutation": "this test set, runs unpaired: exact permutation test of the run means (p-value only)",
    "joint_paired": "the data distribution (a new test set of this size) and new runs; examples paired; "
    "two-way variance with Satterthwaite degrees of freedom",
    "joint_unpaired": "reference: as joint_paired but ignoring the pairing by example",
    "p_better": "P(a candidate run beats a baseline run) on this test set; interval: union of normal-model and "
    "rank intervals, p: the largest of theirs",
    "tost": "equivalence / non-inferiority at the margin (two one-sided t-tests on this test set)",
    "fixes": "examples a baseline run gets wrong and a candidate run right, per pair of runs",
    "regressions": "examples a baseline run gets right and a candidate run wrong, per pair of runs",
}

# --- the tests ----------------------------------------------------------------------------------


def welch(candidate, baseline, alpha: float = 0.05) -> dict:
    """Welch's t-test and t interval of mean(candidate) - mean(baseline), one value per run."""
    a, b = np.asarray(candidate, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    est = zero(a.mean() - b.mean(), scale_of(a, b))
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    if not va + vb > 0:
        return degenerate("welch", est)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's "nearly identical data" note
        res = stats.ttest_ind(a, b, equal_var=False)
        ci = res.confidence_interval(1 - alpha)
    return row("welch", est, (ci.low, ci.high), res.pvalue, res.df, math.sqrt(va + vb))


def paired_runs(candidate, baseline, alpha: float = 0.05) -> dict:
    """Runs paired by seed (row i of each arm shares a seed): paired t-test and its t interval."""
    a, b = np.asarray(candidate, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    d = a - b
    est = zero(d.mean(), scale_of(a, b))
    if not np.var(d, ddof=1) > scale_of(a, b) * RESIDUE:
        return degenerate("paired_runs", est)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_rel(a, b)
        ci = res.confidence_interval(1 - alpha)
    return row("paired_runs", est, (ci.low, ci.high), res.pvalue, res.df, np.std(d, ddof=1) / math.sqrt(len(d)))


@functools.lru_cache(maxsize=32)
def _splits(ra: int, rb: int) -> np.ndarray:
    """Indicator rows of every way to choose ra of ra + rb runs (the exact permutation null)."""
    idx = np.array(list(itertools.combinations(range(ra + rb), ra)))
    out = np.zeros((len(idx), ra + rb), dtype=bool)
    np.put_along_axis(out, idx, True, axis=1)
    return out


#: Above this many arrangements (C(2R, R) unpaired, 2^R paired) ``permutation`` stops
#: enumerating (R = 12 per arm took 773 MB; R >= 14 ran out of memory) and draws
#: ``PERMUTATION_RESAMPLES`` random arrangements from a fixed seed instead (Monte Carlo).
PERMUTATION_EXACT_MAX = 100_000
PERMUTATION_RESAMPLES = 9999
PERMUTATION_SEED = 20210401  # fixed: the same data give the same p-value on every call


def _monte_carlo_null(a, b, paired: bool) -> np.ndarray:
    """The difference of means under ``PERMUTATION_RESAMPLES`` seeded random arrangements
    (paired: random sign flips of the pair differences; unpaired: random relabellings), drawn
    in batches so memory stays small at any number of runs."""
    rng = np.random.default_rng(PERMUTATION_SEED)
    out, done, batch = [], 0, 1000
    pooled = a - b if paired else np.concatenate([a, b])
    while done < PERMUTATION_RESAMPLES:
        m = min(batch, PERMUTATION_RESAMPLES - done)
        if paired:
            signs = 1 - 2 * rng.integers(0, 2, (m, len(pooled)))
            out.append((signs * pooled).mean(1))
        else:
            perm = rng.permuted(np.tile(np.arange(len(pooled)), (m, 1)), axis=1)
            x = pooled[perm]
            out.append(x[:, : len(a)].mean(1) - x[:, len(a) :].mean(1))
        done += m
    return np.concatenate(out)


def permutation(candidate, baseline, paired: bool = False) -> dict:
    """Exact permutation test of the difference of run means (paired: sign flips of the pair
    differences), two-sided as scipy.stats.permutation_test (twice the smaller tail, at most 1;
    a test checks it against scipy, which enumerates ~100x slower). p-value only; ``min_p`` is
    the smallest p the design can reach. Above ``PERMUTATION_EXACT_MAX`` arrangements: a seeded
    Monte-Carlo test of ``PERMUTATION_RESAMPLES`` arrangements, p = 2 min((k + 1) / (B + 1)) over
    the tails as scipy's randomised test, smallest reachable p 2 / (B + 1)."""
    a, b = np.asarray(candidate, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    est = zero(a.mean() - b.mean(), scale_of(a, b))
    eps = 1e-12 * max(1.0, scale_of(a, b))
    n_arr = 2 ** len(a) if paired else math.comb(len(a) + len(b), len(a))
    if n_arr > PERMUTATION_EXACT_MAX:
        null = _monte_carlo_null(a, b, paired)
        obs = (a - b).mean() if paired else a.mean() - b.mean()
        k_hi, k_lo = np.sum(null >= obs - eps), np.sum(null <= obs + eps)
        n = PERMUTATION_RESAMPLES + 1
        p = min(1.0, 2 * min((k_hi + 1) / n, (k_lo + 1) / n))
        min_p = min(1.0, 2.0 / n)
        note = (
            f"Monte Carlo ({PERMUTATION_RESAMPLES} seeded resamples of {n_arr:.3g} arrangements); the "
            f"smallest p it can report is {min_p:.3g}"
        )
        return row("permutation", est, p=p, min_p=min_p, note=note)
    if paired:
        d = a - b
        signs = 1 - 2 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)
        null, obs = (signs * d).mean(1), d.mean()
        min_p = min(1.0, 2.0 / 2 ** len(d))
    else:
        pooled, split = np.concatenate([a, b]), _splits(len(a), len(b))
        sum_a = split @ pooled
        null = sum_a / len(a) - (pooled.sum() - sum_a) / len(b)
        obs = a.mean() - b.mean()
        min_p = min(1.0, 2.0 / len(split))
    p = min(1.0, 2 * min(np.mean(null >= obs - eps), np.mean(null <= obs + eps)))
    note = f"exact; the smallest p this design can reach is {min_p:.3g}"
    return row("permutation", est, p=p, min_p=min_p, note=note)


def _ms_residual(x) -> float:
    r = x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + x.mean()
    return float((r**2).sum() / ((x.shape[0] - 1) * (x.shape[1] - 1)))


def variance_terms(a, b, paired_examples: bool = True, paired_runs: bool = False) -> list[tuple]:
    """The two-way variance of mean(a) - mean(b) when runs and test examples are both random
    draws (crossed random effects, one value per (run, example)), as (coefficient, mean square,
    degrees of freedom) terms: the variance of the run means / runs + the variance of the
    example means / n - the residual mean square / (runs n), per arm (or on a - b when runs are
    paired). Their sum is ``moment_variance``."""
    (ra, n), rb = a.shape, len(b)
    if paired_runs:
        d = a - b
        terms = [(1 / ra, np.var(d.mean(1), ddof=1), ra - 1)]
        if paired_examples:
            cols = (1 / n, np.var(d.mean(0), ddof=1), n - 1)
            return terms + [cols, (-1 / (ra * n), _ms_residual(d), (ra - 1) * (n - 1))]
        arms = [(a, ra), (b, rb)]
    else:
        terms = [(1 / ra, np.var(a.mean(1), ddof=1), ra - 1), (1 / rb, np.var(b.mean(1), ddof=1), rb - 1)]
        arms = [(a, ra), (b, rb)]
    if paired_examples:
        terms.append((1 / n, np.var(a.mean(0) - b.mean(0), ddof=1), n - 1))
    else:
        terms += [(1 / n, np.var(a.mean(0), ddof=1), n - 1), (1 / n, np.var(b.mean(0), ddof=1), n - 1)]
    return terms + [(-1 / (r * n), _ms_residual(x), (r - 1) * (n - 1)) for x, r in arms]


def moment_variance(a, b, paired_examples: bool = True, paired_runs: bool = False) -> float:
    """Unbiased two-way variance of mean(a) - mean(b) (``variance_terms`` summed), never below
    the run-level part (the fixed-test-set variance)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    terms = variance_terms(a, b, paired_examples, paired_runs)
    rows = sum(c * s2 for c, s2, _ in terms[: 1 if paired_runs else 2])
    return float(max(rows, sum(c * s2 for c, s2, _ in terms)))


def joint(candidate, baseline, alpha: float = 0.05, paired_examples: bool = True, paired_runs: bool = False) -> dict:
    """The data-distribution question: mean(candidate) - mean(baseline) with the two-way
    variance of ``variance_terms`` and a t quantile with Satterthwaite degrees of freedom."""
    a, b = np.asarray(candidate, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    test = "joint_paired" if paired_examples else "joint_unpaired"
    est = zero(a.mean() - b.mean(), scale_of(a, b))
    if a.shape[1] < 2:
        return row(test, est, note="the data-distribution question needs >= 2 test examples", calibrated=False)
    terms = variance_terms(a, b, paired_examples, paired_runs)
    runs_only = terms[: 1 if paired_runs else 2]
    out = t_row(test, est, terms, alpha, floor_terms=runs_only)
    if out is None:
        return degenerate(test, est)
    if sum(c * s2 for c, s2, _ in terms) < sum(c * s2 for c, s2, _ in runs_only):
        out["note"] = (
            f"equal to the {'paired t' if paired_runs else 'welch'} interval by construction: the test-set "
            "terms of the two-way variance net negative (sampling noise; a variance cannot be), so the "
            "variance is floored at its run-level part"
        )
    return out


def tost(
    candidate,
    baseline,
    margin: float,
    alpha: float = 0.05,
    higher_is_better: bool = True,
    kind: str = "equivalence",
    paired: bool = False,
) -> dict:
    """Equivalence within +-margin (two one-sided t-tests, p = the larger one-sided p) or
    non-inferiority (the candidate is not worse than the baseline by margin or more), on the
    welch (paired: paired_runs) statistic; the interval is the (1 - 2 alpha) t interval."""
    if not margin > 0:
        raise VerdictError(f"margin must be > 0 (got {margin})")
    base = (paired_runs if paired else welch)(candidate, baseline, 2 * alpha)
    est = base["estimate"]
    if not base["se"] > 0:
        out = degenerate("tost", est, margin=margin, kind=kind)
        out["p_value"] = 0.0 if abs(est) < margin else 1.0
        return out
    df, se = base["df"], base["se"]
    p_low = stats.t.sf((est + margin) / se, df)  # H0: diff <= -margin
    p_high = stats.t.cdf((est - margin) / se, df)  # H0: diff >= +margin
    if kind == "equivalence":
        p = max(p_low, p_high)
    else:  # non-inferiority: worse means lower for accuracy, higher for cross-entropy
        p = p_low if higher_is_better else p_high
    return row(
        "tost",
        est,
        (base["ci_low"], base["ci_high"]),
        p,
        df,
        se,
        margin=margin,
        kind=kind,
        note=f"interval: {100 * (1 - 2 * alpha):.0f} % (the TOST convention)",
    )


def flips(candidate, baseline, alpha: float = 0.05, pairs=None) -> list[dict]:
    """Per-example flips between arms from correctness (runs, n) in % or 0/1: ``fixes`` (baseline
    run wrong, candidate run right) and ``regressions`` (the reverse), in examples, averaged over
    all (candidate, baseline) pairs of runs (or over the seed ``pairs``), with a t interval from
    the two-sample U-statistic variance (Satterthwaite df; paired: one-sample t)."""
    a, b = np.asarray(candidate) > 0, np.asarray(baseline) > 0
    rows = []
    for test, h in (("fixes", lambda x, y: (x & ~y).sum(-1)), ("regressions", lambda x, y: (~x & y).sum(-1))):
        if pairs is not None:
            ia, ib = np.asarray(pairs).T
            k = h(a[ia], b[ib]).astype(np.float64)
            terms = [(1 / len(k), np.var(k, ddof=1), len(k) - 1)]
            est = k.mean()
        else:
            k = h(a[:, None], b[None]).astype(np.float64)  # (runs_a, runs_b)
            est = k.mean()
            terms = [
                (1 / len(a), np.var(k.mean(1), ddof=1), len(a) - 1),
                (1 / len(b), np.var(k.mean(0), ddof=1), len(b) - 1),
            ]
        r = t_row(test, est, terms, alpha)
        if r is None:
            r = row(test, est, (est, est), note="the same count for every pair of runs", calibrated=False)
        r["p_value"] = math.nan
        r["ci_low"] = max(0.0, r["ci_low"])  # a count of examples cannot be negative
        rows.append(r)
    return rows


# --- calibration limits -------------------------------------------------------------------------

#: Tests withheld below a number of runs per arm, where benchmarks/calibration.py found their
#: size above 6.5 % or their coverage below 93 % in some noise structure (docs/comparisons.md):
#: joint_paired at 2 runs per arm rejects 7.0 % and 9.3 % under no effect (docs/calibration-table.md)
#: when per-example arm differences dominate (its run term then has 1-2 degrees of freedom, and Satterthwaite's
#: approximation is too optimistic). A withheld row keeps its estimate, not its interval or p.
WITHHELD_BELOW: dict[str, int] = {"joint_paired": 3}


def _withhold(r: dict, runs: int) -> dict:
    need = WITHHELD_BELOW.get(r["test"])
    if need is not None and runs < need:
        r.update(
            ci_low=math.nan,
            ci_high=math.nan,
            p_value=math.nan,
            calibrated=False,
            note=f"withheld at {runs} runs per arm: not calibrated below {need} runs per arm "
            "(benchmarks/calibration.py)",
        )
    return r


# --- every test of one comparison ---------------------------------------------------------------


def check_arms(baseline: dict, candidate: dict, pairs=None) -> None:
    """Refuse what no test can answer: fewer than 2 runs, different test sets, bad pairs.
    Arrays are per-example values (runs, n) or run scores (runs,)."""
    for metric in baseline:
        if metric not in candidate:
            raise VerdictError(f"the candidate has no {metric}: both arms need the same metrics")
        a, b = np.asarray(candidate[metric]), np.asarray(baseline[metric])
        for arm, x in (("baseline", b), ("candidate", a)):
            if x.ndim not in (1, 2) or len(x) < 2:
                raise VerdictError(f"the {arm} has {len(x)} run(s) with a {metric}: a comparison needs >= 2 per arm")
        if a.ndim != b.ndim or (a.ndim == 2 and a.shape[1] != b.shape[1]):
            raise VerdictError(
                f"the arms were scored on {b.shape[1:]} and {a.shape[1:]} examples: not the same test set"
            )
    if pairs is not None and len(pairs) < 2:
        raise VerdictError(f"{len(pairs)} pair(s) of runs share a seed: paired tests need >= 2")


def compare(
    baseline: dict,
    candidate: dict,
    alpha: float = 0.05,
    pairs=None,
    margin=None,
    margin_kind: str = "equivalence",
    correct: bool = True,
    withhold: bool = True,
    higher_is_better: dict | None = None,
) -> list[dict]:
    """Every test of a candidate against a baseline, one row per (metric, test), long format.

    ``baseline``/``candidate``: metric -> per-example values (runs, n), or run scores (runs,)
    when only a table of final scores exists (then the per-example tests, joint_* and flips,
    are left out). ``pairs``: optional list of (candidate row, baseline row) sharing a seed.
    ``margin``: metric -> margin for ``tost`` (metrics without one get no tost row). Adds
    ``p_holm``: Holm over the metrics, per test (``correct=False``: not, for simulations).
    ``withhold=False`` keeps the numbers of tests not calibrated at this number of runs
    (``WITHHELD_BELOW``; for the calibration benchmark). ``higher_is_better``: metric -> bool
    for metrics ``HIGHER_IS_BETTER`` does not name (default: higher is better).
    ``estimate`` is candidate - baseline (P(candidate better) for p_better).
    """
    check_arms(baseline, candidate, pairs)
    margin = margin or {}
    direction = {**HIGHER_IS_BETTER, **(higher_is_better or {})}
    rows = []
    for metric in baseline:
        a, b = np.asarray(candidate[metric], dtype=np.float64), np.asarray(baseline[metric], dtype=np.float64)
        per_example = a.ndim == 2
        ra, rb = (a.mean(1), b.mean(1)) if per_example else (a, b)
        hib = direction.get(metric, True)
        base = {
            "metric": metric,
            "higher_is_better": hib,
            "n_baseline": len(b),
            "n_candidate": len(a),
            "n_examples": a.shape[1] if per_example else math.nan,
            "baseline_mean": float(rb.mean()),
            "baseline_sd": float(np.std(rb, ddof=1)),
            "candidate_mean": float(ra.mean()),
            "candidate_sd": float(np.std(ra, ddof=1)),
        }
        out = [welch(ra, rb, alpha)]
        if pairs is not None:
            ia, ib = np.asarray(pairs).T
            paired_rows = [paired_runs(ra[ia], rb[ib], alpha), permutation(ra[ia], rb[ib], paired=True)]
            if per_example:
                paired_rows.append(joint(a[ia], b[ib], alpha, True, paired_runs=True))
            paired_rows.append(p_better(ra[ia], rb[ib], hib, alpha, paired=True))
            out += [{**r, "n_baseline": len(ib), "n_candidate": len(ia), "paired": True} for r in paired_rows]
        else:
            out.append(permutation(ra, rb))
            if per_example:
                out.append(joint(a, b, alpha, True))
            out.append(p_better(ra, rb, hib, alpha))
        if per_example:
            out.append(joint(a, b, alpha, False))
        if margin.get(metric) is not None:
            paired = pairs is not None
            sel = (ra[ia], rb[ib]) if paired else (ra, rb)
            out.append(tost(*sel, margin[metric], alpha, hib, margin_kind, paired))
        if metric == "accuracy" and per_example:
            out += flips(a, b, alpha, pairs)
        for r in out:
            runs = min(r.get("n_baseline", len(b)), r.get("n_candidate", len(a)))
            rows.append({**base, **(_withhold(r, runs) if withhold else r)})
    if correct:
        add_holm(rows)
    for r in rows:
        r["question"] = QUESTIONS[r["test"]]
    return rows


def all_pairs(groups: dict, alpha: float = 0.05) -> list[dict]:
    """Every unordered pair of groups (second minus first, in the given order) on every metric:
    welch, joint_paired and p_better, with Holm-corrected p-values over the whole family (all
    pairs x metrics) of each test. ``ci_low``/``ci_high`` are per pair, not adjusted (each covers
    at 1 - alpha on its own); ``ci_low_simultaneous``/``ci_high_simultaneous`` are Bonferroni's
    (each at alpha / family size), which cover together at >= 1 - alpha (column ``ci_note``).

    ``groups``: name -> metric -> per-example values (runs, n), all on the same test set.
    """
    combos = list(itertools.combinations(groups, 2))
    family = len(combos) * len(next(iter(groups.values()), {}))
    rows = []
    for g1, g2 in combos:
        check_arms(groups[g1], groups[g2])
        for metric in groups[g1]:
            a, b = np.asarray(groups[g2][metric], dtype=np.float64), np.asarray(groups[g1][metric], dtype=np.float64)
            base = {"baseline": g1, "candidate": g2, "metric": metric}
            runs = min(len(a), len(b))
            hib = HIGHER_IS_BETTER.get(metric, True)

            def tests(level, a=a, b=b, hib=hib):
                return (
                    welch(a.mean(1), b.mean(1), level),
                    joint(a, b, level, True),
                    p_better(a.mean(1), b.mean(1), hib, level),
                )

            for r, s in zip(tests(alpha), tests(alpha / max(family, 1))):
                r = _withhold(r, runs)
                s = _withhold(s, runs)
                r.update(
                    ci_low_simultaneous=s["ci_low"],
                    ci_high_simultaneous=s["ci_high"],
                    ci_note=f"ci: per pair, not adjusted; ci_*_simultaneous: Bonferroni over {family} "
                    f"(pairs x metrics), together >= {100 * (1 - alpha):g} %",
                )
                rows.append({**base, **r})
    add_holm(rows)
    for r in rows:
        r["question"] = QUESTIONS[r["test"]]
    return rows
