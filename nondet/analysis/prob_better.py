"""P(a candidate run beats a baseline run), with an interval that holds when runs misbehave.

The estimate is the empirical count (unpaired: rliable's probability of improvement, all pairs
of runs with ties half = Mann-Whitney U / nm; paired by seed: Bouthillier et al.'s share of seed
pairs won). Its interval is the union of intervals from different assumptions, so that it covers
when any one of them holds well enough (measured: benchmarks/calibration.py, docs/comparisons.md):

- ``normal``: exact under normal run means with equal SD (the noncentral-t interval of the
  standardised difference d, mapped to Phi(d / sqrt 2); paired Phi(d)); p: the pooled (paired)
  t-test. Alone it covered 31-94 % when 10 % of runs diverge.
- unpaired ``bm``: Brunner-Munzel's rank interval (placements, Welch-type t with Satterthwaite
  df; the variance floored at 1 / (4 n m), the variance one discordant pair of n m contributes,
  so a complete separation still has a width), and ``newcombe``: Newcombe's (2006) method 5,
  a score-type rank interval that keeps its width at the boundary. Both are rank-based: a
  diverged run counts as one loss, not as -5 points.
- paired ``sign``: Clopper-Pearson's exact binomial interval of the share of pairs won (ties
  half); distribution-free, it cannot exclude 0.5 below 6 pairs.

The p-value is the largest of the parts' (the union excludes 0.5 exactly when every part does,
i.e. when that p < alpha): an intersection-union test, never above alpha when any part holds.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import optimize, stats

from nondet.analysis.rows import RESIDUE, degenerate, row, scale_of, zero


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


def _p_from_d(d, paired: bool):
    return stats.norm.cdf(d if paired else d / math.sqrt(2))


def brunner_munzel(a, b, alpha: float, tie: float = 0.0) -> tuple[float, float, float]:
    """Brunner-Munzel interval and two-sided p (null 0.5) of P(a > b) + P(a = b) / 2, from the
    placements of each sample among the other (|a - b| <= ``tie``: a tie); the variance is
    floored at 1 / (4 n m)."""
    na, nb = len(a), len(b)
    d = a[:, None] - b[None]
    gt, eq = d > tie, np.abs(d) <= tie
    pa = (gt.sum(1) + 0.5 * eq.sum(1)) / nb  # placement of each a among the b
    pb = (gt.sum(0) + 0.5 * eq.sum(0)) / na  # share of the a each b loses to
    theta = float(pa.mean())
    va, vb = np.var(pa, ddof=1) / na, np.var(pb, ddof=1) / nb
    floor = 1 / (4 * na * nb)
    if va + vb < floor:
        var, df = floor, na + nb - 2
    else:
        var = va + vb
        df = var**2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    se, q = math.sqrt(var), stats.t.ppf(1 - alpha / 2, df)
    p = 2 * stats.t.sf(abs(theta - 0.5) / se, df)
    return max(0.0, theta - q * se), min(1.0, theta + q * se), float(p)


def newcombe(theta: float, na: int, nb: int, alpha: float) -> tuple[float, float, float]:
    """Newcombe's (2006) method 5 for P(a > b): the thetas whose Hanley-McNeil variance
    V(theta), with N* = (n + m) / 2 - 1, puts the estimate within z sqrt(V); p at theta = 0.5."""
    z, ns = stats.norm.ppf(1 - alpha / 2), (na + nb) / 2 - 1

    def var(t):
        return t * (1 - t) / (na * nb) * (1 + ns * (1 - t) / (2 - t) + ns * t / (1 + t))

    def f(t):
        return (theta - t) ** 2 - z * z * var(t)

    eps = 1e-12
    lo = 0.0 if theta <= eps else optimize.brentq(f, eps, min(theta, 1 - 1e-9), xtol=1e-12)
    hi = 1.0 if theta >= 1 - eps else optimize.brentq(f, max(theta, 1e-9), 1 - eps, xtol=1e-12)
    p = 2 * stats.norm.sf(abs(theta - 0.5) / math.sqrt(var(0.5)))
    return lo, hi, float(p)


def clopper_pearson(k: float, n: int, alpha: float) -> tuple[float, float, float]:
    """Exact (Clopper-Pearson) interval of a share from k successes of n (k may be a half: ties),
    and its dual two-sided p at 0.5: the interval excludes 0.5 exactly when p < alpha."""
    lo = 0.0 if k <= 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k >= n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    p_lo = 1.0 if k <= 0 else float(stats.beta.cdf(0.5, k, n - k + 1))  # lower end above 0.5
    p_hi = 1.0 if k >= n else float(stats.beta.sf(0.5, k + 1, n - k))  # upper end below 0.5
    return lo, hi, min(1.0, 2 * min(p_lo, p_hi))


def p_better(candidate, baseline, higher_is_better: bool = True, alpha: float = 0.05, paired: bool = False) -> dict:
    """P(a candidate run beats a baseline run): the estimate, the union interval of the module's
    parts and the intersection-union p-value; each part's interval and p in its own columns
    (``normal_*``, ``bm_*``, ``newcombe_*``; paired ``sign_*``)."""
    sign = 1.0 if higher_is_better else -1.0
    a, b = sign * np.asarray(candidate, dtype=np.float64), sign * np.asarray(baseline, dtype=np.float64)
    tiny = RESIDUE * max(scale_of(a, b), 1e-300)
    if paired:
        d = a - b
        tie = np.abs(d) <= tiny  # float residue is a tie (``zero``)
        wins = float(np.sum((d > 0) & ~tie) + 0.5 * np.sum(tie))
        est = wins / len(d)
        n_eff, df, diff = len(d), len(d) - 1, zero(d.mean(), scale_of(a, b))
        sd = float(np.std(d, ddof=1)) if np.var(d, ddof=1) > scale_of(a, b) * RESIDUE else 0.0
        k = 1 / math.sqrt(n_eff)
    else:
        d = a[:, None] - b[None]
        tie = np.abs(d) <= tiny
        est = float((((d > 0) & ~tie) + 0.5 * tie).mean())
        df, diff = len(a) + len(b) - 2, zero(a.mean() - b.mean(), scale_of(a, b))
        sd = math.sqrt(((len(a) - 1) * np.var(a, ddof=1) + (len(b) - 1) * np.var(b, ddof=1)) / df)
        k = math.sqrt(1 / len(a) + 1 / len(b))
    definition = "paired runs (Bouthillier et al.)" if paired else "all pairs of runs (rliable; Mann-Whitney U/nm)"
    if not sd > 0:
        out = degenerate("p_better", est)
        if diff != 0:  # every candidate run beats (or loses to) every baseline run, exactly
            out["ci_low"] = out["ci_high"] = 1.0 if diff > 0 else 0.0
        else:
            out["estimate"], out["ci_low"], out["ci_high"] = 0.5, 0.5, 0.5
        return {**out, "definition": definition}
    t_obs = diff / sd / k
    nlo, nhi = _nct_interval(t_obs, df, alpha)
    normal = (float(_p_from_d(nlo * k, paired)), float(_p_from_d(nhi * k, paired)), 2 * stats.t.sf(abs(t_obs), df))
    parts = {"normal": normal}
    if paired:
        # ties count half, as in the estimate: the share's numerator may be a half
        parts["sign"] = clopper_pearson(wins, len(d), alpha)
    else:
        parts["bm"] = brunner_munzel(a, b, alpha, tiny)
        parts["newcombe"] = newcombe(est, len(a), len(b), alpha)
    lo = min(v[0] for v in parts.values())
    hi = max(v[1] for v in parts.values())
    p = max(v[2] for v in parts.values())
    cols = {}
    for name, (plo, phi, pp) in parts.items():
        cols.update({f"{name}_low": float(plo), f"{name}_high": float(phi), f"{name}_p": float(pp)})
    names = " + ".join(parts)
    note = f"interval: union of {names}, p: the largest of theirs (every part must exclude 0.5)"
    return {
        **row("p_better", est, (lo, hi), p, df, note=note, p_normal=float(_p_from_d(diff / sd, paired)), **cols),
        "definition": definition,
    }
