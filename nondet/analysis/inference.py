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
- ``p_better``: P(a candidate run beats a baseline run). The estimate is rliable's probability of
  improvement (all pairs of runs, ties half: Mann-Whitney U / nm); paired by seed, Bouthillier
  et al.'s (the share of seed pairs the candidate wins). Its interval is exact under normal run
  means with equal SD: the noncentral-t interval of the standardised difference d mapped to
  Phi(d / sqrt 2) (paired: Phi(d)); its p-value is the pooled (paired) t-test, so the interval
  excludes 0.5 exactly when p < alpha.
- ``tost``: equivalence (two one-sided tests) or non-inferiority at a margin, on the welch
  (paired_runs) statistic.
- ``fixes`` / ``regressions``: per-example flips between arms, for accuracy: the examples a
  baseline run gets wrong and a candidate run right (and the reverse), averaged over run pairs,
  with a t interval from the two-sample U-statistic variance.

``verdict`` reads the rows into a decision after Bouthillier et al. (MLSys 2021): not
significant / significant but not meaningful / significant and meaningful, from the interval of
P(A > B) and the threshold gamma. ``plan`` gives replicas per arm for an effect the user names
(never the observed one unless labelled post hoc), and the Noether size of the P(A > B) test.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings

import numpy as np
from scipy import optimize, stats

#: Which way is better, per metric of ``per_example_values``.
HIGHER_IS_BETTER = {"accuracy": True, "cross_entropy": False}

QUESTIONS = {
    "welch": "this test set: do new training runs of the candidate score differently? (runs unpaired; Welch t)",
    "paired_runs": "this test set: runs paired by a shared seed (paired t)",
    "permutation": "this test set, runs unpaired: exact permutation test of the run means (p-value only)",
    "joint_paired": "the data distribution (a new test set of this size) and new runs; examples paired; "
    "two-way variance with Satterthwaite degrees of freedom",
    "joint_unpaired": "reference: as joint_paired but ignoring the pairing by example",
    "p_better": "P(a candidate run beats a baseline run) on this test set; interval and p: normal run means",
    "tost": "equivalence / non-inferiority at the margin (two one-sided t-tests on this test set)",
    "fixes": "examples a baseline run gets wrong and a candidate run right, per pair of runs",
    "regressions": "examples a baseline run gets right and a candidate run wrong, per pair of runs",
}

#: Relative size below which a difference of means is float residue, not a difference.
RESIDUE = 1e-9


class VerdictError(ValueError):
    """A comparison cannot be made (too few runs, different test sets, bad margin or gamma)."""


# --- small helpers ------------------------------------------------------------------------------


def _zero(x: float, scale: float) -> float:
    """``x`` with float residue (|x| <= RESIDUE * scale) set to exactly 0."""
    return 0.0 if abs(x) <= RESIDUE * max(scale, 1e-300) else float(x)


def _scale(*arrays) -> float:
    return max(float(np.max(np.abs(x))) if np.size(x) else 0.0 for x in arrays) or 1.0


def _row(test, estimate, ci=(math.nan, math.nan), p=math.nan, df=math.nan, se=math.nan, **extra) -> dict:
    return {
        "test": test,
        "estimate": float(estimate),
        "ci_low": float(ci[0]),
        "ci_high": float(ci[1]),
        "p_value": float(p),
        "df": float(df),
        "se": float(se),
        "min_p": extra.pop("min_p", math.nan),
        "calibrated": extra.pop("calibrated", True),
        "note": extra.pop("note", ""),
        **extra,
    }


def _t_row(test, estimate, var_terms, alpha, floor_terms=None, null=0.0, **extra) -> dict | None:
    """t interval and two-sided p of ``estimate`` with variance sum(c * s2) over ``var_terms`` =
    [(c, s2, df), ...] (c may be negative) and Satterthwaite degrees of freedom; when that sum
    falls below the sum of ``floor_terms``, those are used instead. None if the variance is 0."""
    var = sum(c * s2 for c, s2, _ in var_terms)
    if floor_terms is not None and var < sum(c * s2 for c, s2, _ in floor_terms):
        var_terms = floor_terms
        var = sum(c * s2 for c, s2, _ in var_terms)
    if not var > 0:
        return None
    denom = sum((c * s2) ** 2 / d for c, s2, d in var_terms if d > 0 and s2 > 0)
    df = var**2 / denom if denom > 0 else math.inf
    se = math.sqrt(var)
    q = stats.t.ppf(1 - alpha / 2, df)
    p = 2 * stats.t.sf(abs(estimate - null) / se, df)
    return _row(test, estimate, (estimate - q * se, estimate + q * se), p, df, se, **extra)


def _degenerate(test, estimate, **extra) -> dict:
    """No run-to-run variation was measured (every run of an arm gives the same value)."""
    if estimate == 0:
        note = "no run-to-run variation and no difference: the arms are identical"
        return _row(test, 0.0, (0.0, 0.0), 1.0, note=note, calibrated=False, **extra)
    return _row(
        test,
        estimate,
        note="no run-to-run variation was measured: the difference is exact on this test set, "
        "but no interval or p-value can be given",
        calibrated=False,
        **extra,
    )


# --- the tests ----------------------------------------------------------------------------------


def welch(candidate, baseline, alpha: float = 0.05) -> dict:
    """Welch's t-test and t interval of mean(candidate) - mean(baseline), one value per run."""
    a, b = np.asarray(candidate, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    est = _zero(a.mean() - b.mean(), _scale(a, b))
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    if not va + vb > 0:
        return _degenerate("welch", est)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's "nearly identical data" note
        res = stats.ttest_ind(a, b, equal_var=False)
        ci = res.confidence_interval(1 - alpha)
    return _row("welch", est, (ci.low, ci.high), res.pvalue, res.df, math.sqrt(va + vb))


def paired_runs(candidate, baseline, alpha: float = 0.05) -> dict:
    """Runs paired by seed (row i of each arm shares a seed): paired t-test and its t interval."""
    a, b = np.asarray(candidate, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    d = a - b
    est = _zero(d.mean(), _scale(a, b))
    if not np.var(d, ddof=1) > _scale(a, b) * RESIDUE:
        return _degenerate("paired_runs", est)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_rel(a, b)
        ci = res.confidence_interval(1 - alpha)
    return _row("paired_runs", est, (ci.low, ci.high), res.pvalue, res.df, np.std(d, ddof=1) / math.sqrt(len(d)))


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
    est = _zero(a.mean() - b.mean(), _scale(a, b))
    eps = 1e-12 * max(1.0, _scale(a, b))
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
        return _row("permutation", est, p=p, min_p=min_p, note=note)
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
    return _row("permutation", est, p=p, min_p=min_p, note=note)


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
    est = _zero(a.mean() - b.mean(), _scale(a, b))
    if a.shape[1] < 2:
        return _row(test, est, note="the data-distribution question needs >= 2 test examples", calibrated=False)
    terms = variance_terms(a, b, paired_examples, paired_runs)
    row = _t_row(test, est, terms, alpha, floor_terms=terms[: 1 if paired_runs else 2])
    return row if row is not None else _degenerate(test, est)


def _p_from_d(d, paired: bool):
    return stats.norm.cdf(d if paired else d / math.sqrt(2))


def _nct_interval(t_obs: float, df: float, alpha: float) -> tuple[float, float]:
    """Noncentrality parameters whose noncentral t puts t_obs at its 1-alpha/2 and alpha/2
    points (the exact interval of the noncentrality under normal data). Computed for |t_obs|
    and mirrored: scipy's nct.cdf returns NaN far in the left tail of a large noncentrality."""
    if t_obs < 0:
        lo, hi = _nct_interval(-t_obs, df, alpha)
        return -hi, -lo

    def cdf(nc):
        v = stats.nct.cdf(t_obs, df, nc)
        return v if np.isfinite(v) else (0.0 if nc > t_obs else 1.0)

    def bound(target):
        lo, hi = t_obs - 10, t_obs + 10  # cdf falls as nc rises
        while cdf(lo) < target:
            lo -= 10 + abs(lo)
        while cdf(hi) > target:
            hi += 10 + abs(hi)
        return optimize.brentq(lambda nc: cdf(nc) - target, lo, hi, xtol=1e-10)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bound(1 - alpha / 2), bound(alpha / 2)


def p_better(candidate, baseline, higher_is_better: bool = True, alpha: float = 0.05, paired: bool = False) -> dict:
    """P(a candidate run beats a baseline run).

    Unpaired: ``estimate`` is rliable's probability of improvement, over all (candidate,
    baseline) pairs with ties half (Mann-Whitney U / nm). Paired by seed (row i of each arm
    shares a seed): Bouthillier et al.'s, the share of seed pairs the candidate wins (ties half).
    Interval: exact under normal run means with equal SD (noncentral t of the standardised
    difference d, mapped to Phi(d / sqrt 2), paired Phi(d)); p-value: the pooled (paired) t-test.
    """
    sign = 1.0 if higher_is_better else -1.0
    a, b = sign * np.asarray(candidate, dtype=np.float64), sign * np.asarray(baseline, dtype=np.float64)
    if paired:
        d = a - b
        tie = np.abs(d) <= RESIDUE * max(_scale(a, b), 1e-300)  # float residue is a tie (``_zero``)
        est = float(np.mean((d > 0) & ~tie) + 0.5 * np.mean(tie))
        n_eff, df, diff = len(d), len(d) - 1, _zero(d.mean(), _scale(a, b))
        sd = float(np.std(d, ddof=1)) if np.var(d, ddof=1) > _scale(a, b) * RESIDUE else 0.0
        k = 1 / math.sqrt(n_eff)
    else:
        d = a[:, None] - b[None]
        tie = np.abs(d) <= RESIDUE * max(_scale(a, b), 1e-300)  # float residue is a tie (``_zero``)
        est = float((((d > 0) & ~tie) + 0.5 * tie).mean())
        df, diff = len(a) + len(b) - 2, _zero(a.mean() - b.mean(), _scale(a, b))
        sd = math.sqrt(((len(a) - 1) * np.var(a, ddof=1) + (len(b) - 1) * np.var(b, ddof=1)) / df)
        k = math.sqrt(1 / len(a) + 1 / len(b))
    definition = "paired runs (Bouthillier et al.)" if paired else "all pairs of runs (rliable; Mann-Whitney U/nm)"
    if not sd > 0:
        row = _degenerate("p_better", est)
        if diff != 0:  # every candidate run beats (or loses to) every baseline run, exactly
            row["ci_low"] = row["ci_high"] = 1.0 if diff > 0 else 0.0
        else:
            row["estimate"], row["ci_low"], row["ci_high"] = 0.5, 0.5, 0.5
        return {**row, "definition": definition}
    t_obs = diff / sd / k
    lo, hi = _nct_interval(t_obs, df, alpha)
    p = 2 * stats.t.sf(abs(t_obs), df)
    return {
        **_row(
            "p_better",
            est,
            (_p_from_d(lo * k, paired), _p_from_d(hi * k, paired)),
            p,
            df,
            p_normal=float(_p_from_d(diff / sd, paired)),
        ),
        "definition": definition,
    }


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
        row = _degenerate("tost", est, margin=margin, kind=kind)
        row["p_value"] = 0.0 if abs(est) < margin else 1.0
        return row
    df, se = base["df"], base["se"]
    p_low = stats.t.sf((est + margin) / se, df)  # H0: diff <= -margin
    p_high = stats.t.cdf((est - margin) / se, df)  # H0: diff >= +margin
    if kind == "equivalence":
        p = max(p_low, p_high)
    else:  # non-inferiority: worse means lower for accuracy, higher for cross-entropy
        p = p_low if higher_is_better else p_high
    return _row(
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
        row = _t_row(test, est, terms, alpha)
        if row is None:
            row = _row(test, est, (est, est), note="the same count for every pair of runs", calibrated=False)
        row["p_value"] = math.nan
        row["ci_low"] = max(0.0, row["ci_low"])  # a count of examples cannot be negative
        rows.append(row)
    return rows


def holm(p_values) -> np.ndarray:
    """Holm-corrected p-values (statsmodels.stats.multitest.multipletests); NaNs stay NaN."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


# --- calibration limits -------------------------------------------------------------------------

#: Tests withheld below a number of runs per arm, where benchmarks/calibration.py found their
#: size above 6.5 % or their coverage below 93 % in some noise structure (docs/comparisons.md):
#: joint_paired at 2 runs per arm rejects 7.0 % and 9.3 % under no effect (docs/calibration-table.md)
#: when per-example arm differences dominate (its run term then has 1-2 degrees of freedom, and Satterthwaite's
#: approximation is too optimistic). A withheld row keeps its estimate, not its interval or p.
WITHHELD_BELOW: dict[str, int] = {"joint_paired": 3}


def _withhold(row: dict, runs: int) -> dict:
    need = WITHHELD_BELOW.get(row["test"])
    if need is not None and runs < need:
        row.update(
            ci_low=math.nan,
            ci_high=math.nan,
            p_value=math.nan,
            calibrated=False,
            note=f"withheld at {runs} runs per arm: not calibrated below {need} runs per arm "
            "(benchmarks/calibration.py)",
        )
    return row


# --- every test of one comparison ---------------------------------------------------------------


def check_arms(baseline: dict, candidate: dict, pairs=None) -> None:
    """Refuse what no test can answer: fewer than 2 runs, different test sets, bad pairs."""
    for metric in baseline:
        a, b = np.asarray(candidate[metric]), np.asarray(baseline[metric])
        for arm, x in (("baseline", b), ("candidate", a)):
            if x.ndim != 2 or len(x) < 2:
                raise VerdictError(f"the {arm} has {len(x)} run(s) with a {metric}: a comparison needs >= 2 per arm")
        if a.shape[1] != b.shape[1]:
            raise VerdictError(f"the arms were scored on {b.shape[1]} and {a.shape[1]} examples: not the same test set")
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
) -> list[dict]:
    """Every test of a candidate against a baseline, one row per (metric, test), long format.

    ``baseline``/``candidate``: metric -> per-example values (runs, n). ``pairs``: optional list
    of (candidate row, baseline row) sharing a seed. ``margin``: metric -> margin for ``tost``
    (metrics without one get no tost row). Adds ``p_holm``: Holm over the metrics, per test
    (``correct=False``: not, for simulations). ``withhold=False`` keeps the numbers of tests not
    calibrated at this number of runs (``WITHHELD_BELOW``; for the calibration benchmark).
    ``estimate`` is candidate - baseline (P(candidate better) for p_better).
    """
    check_arms(baseline, candidate, pairs)
    margin = margin or {}
    rows = []
    for metric in baseline:
        a, b = np.asarray(candidate[metric], dtype=np.float64), np.asarray(baseline[metric], dtype=np.float64)
        ra, rb = a.mean(1), b.mean(1)
        hib = HIGHER_IS_BETTER.get(metric, True)
        base = {
            "metric": metric,
            "n_baseline": len(b),
            "n_candidate": len(a),
            "n_examples": a.shape[1],
            "baseline_mean": float(rb.mean()),
            "baseline_sd": float(np.std(rb, ddof=1)),
            "candidate_mean": float(ra.mean()),
            "candidate_sd": float(np.std(ra, ddof=1)),
        }
        out = [welch(ra, rb, alpha)]
        if pairs is not None:
            ia, ib = np.asarray(pairs).T
            paired_rows = [
                paired_runs(ra[ia], rb[ib], alpha),
                permutation(ra[ia], rb[ib], paired=True),
                joint(a[ia], b[ib], alpha, True, paired_runs=True),
                p_better(ra[ia], rb[ib], hib, alpha, paired=True),
            ]
            out += [{**r, "n_baseline": len(ib), "n_candidate": len(ia), "paired": True} for r in paired_rows]
        else:
            out += [permutation(ra, rb), joint(a, b, alpha, True), p_better(ra, rb, hib, alpha)]
        out.append(joint(a, b, alpha, False))
        if margin.get(metric) is not None:
            paired = pairs is not None
            sel = (ra[ia], rb[ib]) if paired else (ra, rb)
            out.append(tost(*sel, margin[metric], alpha, hib, margin_kind, paired))
        if metric == "accuracy":
            out += flips(a, b, alpha, pairs)
        for r in out:
            runs = min(r.get("n_baseline", len(b)), r.get("n_candidate", len(a)))
            rows.append({**base, **(_withhold(r, runs) if withhold else r)})
    for test in dict.fromkeys(r["test"] for r in rows) if correct else ():
        sub = [r for r in rows if r["test"] == test]
        for r, p in zip(sub, holm([r["p_value"] for r in sub])):
            r["p_holm"] = float(p)
    for r in rows:
        r["question"] = QUESTIONS[r["test"]]
    return rows


def all_pairs(groups: dict, alpha: float = 0.05) -> list[dict]:
    """Every unordered pair of groups (second minus first, in the given order) on every metric:
    welch, joint_paired and p_better, with Holm-corrected p-values over the whole family (all
    pairs x metrics) of each test.

    ``groups``: name -> metric -> per-example values (runs, n), all on the same test set.
    """
    rows = []
    for g1, g2 in itertools.combinations(groups, 2):
        check_arms(groups[g1], groups[g2])
        for metric in groups[g1]:
            a, b = np.asarray(groups[g2][metric], dtype=np.float64), np.asarray(groups[g1][metric], dtype=np.float64)
            base = {"baseline": g1, "candidate": g2, "metric": metric}
            runs = min(len(a), len(b))
            for r in (
                welch(a.mean(1), b.mean(1), alpha),
                joint(a, b, alpha, True),
                p_better(a.mean(1), b.mean(1), HIGHER_IS_BETTER.get(metric, True), alpha),
            ):
                rows.append({**base, **_withhold(r, runs)})
    for test in dict.fromkeys(r["test"] for r in rows):
        sub = [r for r in rows if r["test"] == test]
        for r, p in zip(sub, holm([r["p_value"] for r in sub])):
            r["p_holm"] = float(p)
    for r in rows:
        r["question"] = QUESTIONS[r["test"]]
    return rows


# --- the verdict --------------------------------------------------------------------------------

DECISIONS = ("not significant", "significant but not meaningful", "significant and meaningful")


def verdict(rows: list[dict], gamma: float = 0.75, alpha: float = 0.05, held_fixed: str = "") -> list[dict]:
    """One readable verdict per metric from ``compare``'s rows: the difference with its interval
    (paired_runs when runs are paired, else welch), P(A > B) with its interval, and the three-way
    decision of Bouthillier et al. (MLSys 2021) on that interval: it reaches 0.5 -> not
    significant; it lies above 0.5 but its upper end is below gamma -> significant but not
    meaningful; otherwise significant and meaningful (mirrored at 1 - gamma when the candidate is
    worse). With a margin, the equivalence (non-inferiority) outcome too."""
    if not 0.5 < gamma < 1:
        raise VerdictError(f"gamma must lie in (0.5, 1) (got {gamma})")
    out = []
    for metric in dict.fromkeys(r["metric"] for r in rows):
        by = {r["test"]: r for r in rows if r["metric"] == metric}
        diff = by.get("paired_runs", by["welch"])
        pb = by["p_better"]
        lo, hi = pb["ci_low"], pb["ci_high"]
        runs = min(diff["n_baseline"], diff["n_candidate"])
        if not (np.isfinite(lo) and np.isfinite(hi)):
            decision = "no verdict"
            why = pb["note"] or "P(A > B) has no interval"
        elif lo <= 0.5 <= hi:
            decision, why = DECISIONS[0], f"the interval of P(A > B) reaches 0.5 at alpha = {alpha:g}"
        else:
            better = lo > 0.5
            meaningful = hi >= gamma if better else lo <= 1 - gamma
            decision = DECISIONS[2] if meaningful else DECISIONS[1]
            side = "better" if better else "worse"
            decision = f"{decision} (candidate {side})"
            bound = f"gamma = {gamma:g}" if better else f"1 - gamma = {1 - gamma:g}"
            why = (
                f"the interval of P(A > B) lies {'above' if better else 'below'} 0.5 and "
                f"{'reaches' if meaningful else 'stays short of'} {bound}"
            )
        if pb["note"].startswith("no run-to-run variation"):
            decision = "identical arms" if diff["estimate"] == 0 else "exact difference (no run-to-run noise)"
            why = pb["note"]
        perm = by.get("permutation")
        floor = ""
        if perm is not None and perm["min_p"] > alpha:
            if perm.get("paired"):
                chance = f"the candidate winning every one of {runs} seed pairs happens by chance 1 time in {2**runs}"
            else:
                chance = (
                    f"all candidate runs beating all baseline runs happens by chance 1 time in "
                    f"{math.comb(diff['n_baseline'] + diff['n_candidate'], diff['n_candidate'])}"
                )
            floor = (
                f"with {runs} runs per arm no exact distribution-free test can reach p < {alpha:g} "
                f"(smallest two-sided p: {perm['min_p']:.3g}; {chance})"
            )
        row = {
            "metric": metric,
            "decision": decision,
            "difference": diff["estimate"],
            "diff_low": diff["ci_low"],
            "diff_high": diff["ci_high"],
            "diff_test": diff["test"],
            "diff_note": diff["note"],
            "p_value": diff["p_value"],
            "p_better": pb["estimate"],
            "p_better_low": lo,
            "p_better_high": hi,
            "p_better_definition": pb.get("definition", ""),
            "gamma": gamma,
            "runs_baseline": diff["n_baseline"],
            "runs_candidate": diff["n_candidate"],
            "why": why,
            "small_sample": floor,
            "held_fixed": held_fixed,
        }
        if "joint_paired" in by:
            j = by["joint_paired"]
            row.update(
                distribution_low=j["ci_low"],
                distribution_high=j["ci_high"],
                distribution_p=j["p_value"],
                distribution_note=j["note"],
            )
        if "tost" in by:
            t = by["tost"]
            ok = t["p_value"] < alpha
            what = "equivalent within" if t["kind"] == "equivalence" else "not worse by"
            row["equivalence"] = f"{'' if ok else 'not shown '}{what} {t['margin']:g} (TOST p = {t['p_value']:.3g})"
        if "fixes" in by:
            f, g = by["fixes"], by["regressions"]
            row.update(fixes=f["estimate"], fixes_low=f["ci_low"], fixes_high=f["ci_high"])
            row.update(regressions=g["estimate"], regressions_low=g["ci_low"], regressions_high=g["ci_high"])
        out.append(row)
    return out


def _finite(*xs) -> bool:
    return all(np.isfinite(x) for x in xs)


def _no_interval(note: str) -> str:
    """What a line says in place of an interval and p-value that were withheld or cannot exist."""
    if not note:
        return "no interval"
    if note.startswith("no run-to-run variation"):
        return "no run-to-run variation: every run of an arm scores the same; no interval or p-value"
    return note


def verdict_lines(name: str, verdicts: list[dict], units=None) -> list[str]:
    """The verdict as sentences, one block per metric (summary logs and verdict.md). An interval
    that was withheld or cannot exist (no run-to-run variation) is replaced by the reason."""
    units = units or {"accuracy": " points", "cross_entropy": " nats"}
    lines = []
    for v in verdicts:
        u = units.get(v["metric"], "")
        if _finite(v["diff_low"], v["diff_high"], v["p_value"]):
            diff = f"[{v['diff_low']:+.4g}, {v['diff_high']:+.4g}] ({v['diff_test']}, p = {v['p_value']:.3g})"
        else:
            diff = f"({v['diff_test']}: {_no_interval(v.get('diff_note', ''))})"
        if _finite(v["p_better_low"], v["p_better_high"]):
            pb = f"{v['p_better']:.2f} [{v['p_better_low']:.2f}, {v['p_better_high']:.2f}]"
        else:
            pb = f"{v['p_better']:.2f} (no interval)"
        lines.append(
            f"{name} {v['metric']}: {v['decision'].upper()}. candidate - baseline = {v['difference']:+.4g}{u} "
            f"{diff}; P(candidate better) = {pb} "
            f"({v['p_better_definition']}); {v['runs_baseline']} vs {v['runs_candidate']} runs; {v['why']}."
        )
        if "fixes" in v:
            lines.append(
                f"  per example: {v['fixes']:.1f} fixes [{v['fixes_low']:.1f}, {v['fixes_high']:.1f}] and "
                f"{v['regressions']:.1f} regressions [{v['regressions_low']:.1f}, {v['regressions_high']:.1f}] "
                "per pair of runs"
            )
        if "distribution_low" in v:
            where = "  on the data distribution (a new test set of this size): "
            if _finite(v["distribution_low"], v["distribution_high"], v["distribution_p"]):
                lines.append(
                    f"{where}[{v['distribution_low']:+.4g}, {v['distribution_high']:+.4g}], "
                    f"p = {v['distribution_p']:.3g}"
                )
            else:
                lines.append(where + _no_interval(v.get("distribution_note", "")))
        for key in ("equivalence", "small_sample", "held_fixed"):
            if v.get(key):
                lines.append(f"  {v[key]}")
    return lines


# --- planning -----------------------------------------------------------------------------------


def power_two_sample(n: int, delta: float, sd: float, alpha: float) -> float:
    """Power of the two-sided two-sample t-test with n replicas per arm (noncentral t)."""
    if n < 2 or not sd > 0:
        return float("nan")
    df = 2 * n - 2
    nc = abs(delta) / (sd * math.sqrt(2.0 / n))
    t_crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(t_crit, df, nc) + stats.nct.cdf(-t_crit, df, nc))


#: The most replicas per arm a plan reports; more is labelled "cannot be reached" (-1).
MAX_REPLICAS = 100_000


def replicas_needed(delta: float, sd: float, alpha: float = 0.05, power: float = 0.8, max_n: int = MAX_REPLICAS) -> int:
    """Smallest replicas per arm for which the two-sided t-test detects ``delta`` with ``power``
    (bisection on the noncentral-t power); -1 when undefined (no difference, no noise) or above
    ``max_n``."""
    if not np.isfinite(delta) or delta == 0 or not sd > 0:
        return -1
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    if 2 * (z * sd / delta) ** 2 > 2 * max_n:
        return -1
    lo, hi = 1, 2
    while power_two_sample(hi, delta, sd, alpha) < power:
        lo, hi = hi, 2 * hi
        if lo > max_n:
            return -1
    while hi - lo > 1:  # power rises with n: the first n reaching it
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if power_two_sample(mid, delta, sd, alpha) >= power else (mid, hi)
    return hi if hi <= max_n else -1


def noether_runs(gamma: float, alpha: float = 0.05, power: float = 0.95) -> int:
    """Runs per arm for the P(A > B) test to detect P = gamma (Noether 1987, for the Mann-Whitney
    statistic, as Bouthillier et al. use it): (z_{1-alpha} + z_{power})^2 / (6 (gamma - 1/2)^2)."""
    if not 0.5 < gamma < 1:
        raise VerdictError(f"gamma must lie in (0.5, 1) (got {gamma})")
    z = stats.norm.ppf(1 - alpha) + stats.norm.ppf(power)
    return math.ceil(z**2 / (6 * (gamma - 0.5) ** 2))


PLAN_ASSUMPTIONS = (
    "two-sided two-sample t-test on per-run means at alpha with equal SD in both arms; runs "
    "independent and normal around their arm's mean; the question is 'on this test set'. "
    "pilot_sd: pooled run-to-run SD of the pilots, interval = chi-square interval of a normal SD. "
    "indep_only: the SD independent per-example flips alone give (per-example variances over pilot "
    "runs); it assumes no shared component, so it is a lower bound on the SD and on the replicas "
    "needed. distribution: the new-test-set question, whose test-set term does not shrink with runs."
)


def plan(
    baseline,
    candidate,
    effect=None,
    alpha: float = 0.05,
    power: float = 0.8,
    confidence: float = 0.95,
    gamma: float = 0.75,
) -> list[dict]:
    """Replicas per arm from pilot runs' per-example values (runs, n) of each arm.

    ``effect`` (candidate - baseline, in the metric's units) is the user's; without it the plan
    is for the observed difference and labelled ``observed (post hoc)`` (it is a function of the
    p-value, and planning more runs from it invites optional stopping). Rows: ``pilot_sd`` and
    ``indep_only`` (this test set, with an interval for the SD and the replicas at its ends),
    ``distribution`` (a new test set: says when the effect cannot be reached by more runs), and
    ``p_better`` (the Noether size for gamma, which needs no pilots)."""
    a, b = np.asarray(candidate, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    (ra, n), rb = a.shape, len(b)
    df = ra + rb - 2
    if df < 2:
        raise VerdictError("planning needs at least 2 pilot runs per arm")
    label = "named (config effect)"
    if effect is None:
        effect, label = _zero(float(a.mean() - b.mean()), _scale(a, b)), "observed (post hoc)"
    pooled = ((ra - 1) * np.var(a.mean(1), ddof=1) + (rb - 1) * np.var(b.mean(1), ddof=1)) / df
    sd = math.sqrt(pooled)
    q = (1 - confidence) / 2
    sd_int = (sd * math.sqrt(df / stats.chi2.ppf(1 - q, df)), sd * math.sqrt(df / stats.chi2.ppf(q, df)))
    v = ((ra - 1) * np.var(a, axis=0, ddof=1) + (rb - 1) * np.var(b, axis=0, ddof=1)) / df
    part, part_se = v.mean() / n, v.std(ddof=1) / math.sqrt(n) / n
    z = stats.norm.ppf(1 - q)
    ts = math.sqrt(part)
    ts_int = (math.sqrt(max(0.0, part - z * part_se)), math.sqrt(part + z * part_se))
    common = {
        "pilot_runs_baseline": rb,
        "pilot_runs_candidate": ra,
        "effect": effect,
        "effect_is": label,
        "alpha": alpha,
        "power": power,
        "confidence": confidence,
        "assumptions": PLAN_ASSUMPTIONS,
    }
    rows = []
    for basis, s, (lo, hi) in (("pilot_sd", sd, sd_int), ("indep_only", ts, ts_int)):
        rows.append(
            {
                **common,
                "basis": basis,
                "sd": s,
                "sd_low": lo,
                "sd_high": hi,
                "replicas_needed": replicas_needed(effect, s, alpha, power),
                "replicas_low": replicas_needed(effect, lo, alpha, power) if lo > 0 else 2,
                "replicas_high": replicas_needed(effect, hi, alpha, power),
                "indep_share": part / pooled if pooled > 0 else float("nan"),
                "note": "",
            }
        )
    # the distribution question: Var = 2 sd_run^2 / R + the test-set term, which more runs leave
    terms = variance_terms(a, b, True, False)
    test_term = max(0.0, sum(c * s2 for c, s2, _ in terms[2:]))
    zz = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    reach = zz * math.sqrt(test_term)
    if effect == 0 or not np.isfinite(effect):
        need, note = -1, "no effect to plan for"
    elif abs(effect) <= reach:
        need, note = (
            -1,
            (
                f"cannot be reached by more runs: the test-set term alone needs |effect| > {reach:.3g} "
                f"at this power; use a larger test set"
            ),
        )
    else:
        room = (abs(effect) / zz) ** 2 - test_term
        need = max(2, math.ceil(2 * pooled / room)) if room > 0 and pooled > 0 else 2
        note = "normal approximation"
        if need > MAX_REPLICAS:
            need, note = (
                -1,
                (
                    f"cannot be reached by more runs: it needs more than {MAX_REPLICAS} replicas per "
                    "arm (normal approximation)"
                ),
            )
    rows.append(
        {
            **common,
            "basis": "distribution",
            "sd": sd,
            "sd_low": math.nan,
            "sd_high": math.nan,
            "replicas_needed": need,
            "replicas_low": math.nan,
            "replicas_high": math.nan,
            "indep_share": math.nan,
            "note": note,
        }
    )
    rows.append(
        {
            **common,
            "basis": "p_better",
            "effect": gamma,
            "effect_is": "gamma (P(A > B))",
            "sd": math.nan,
            "sd_low": math.nan,
            "sd_high": math.nan,
            "replicas_needed": noether_runs(gamma, alpha, power),
            "replicas_low": math.nan,
            "replicas_high": math.nan,
            "indep_share": math.nan,
            "note": "Noether: (z_{1-alpha} + z_{power})^2 / (6 (gamma - 1/2)^2), one-sided",
        }
    )
    return rows
