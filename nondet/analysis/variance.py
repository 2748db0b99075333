"""Variance components of a factorial design over sources of randomness, and per-example values
of runs (the input of the verdict engine, ``nondet.analysis.inference``, which makes every comparison).

Uses scipy.stats for the F tests; the ANOVA variance components (method of moments) are written
here.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import stats

# --- variance components of a full factorial design over sources ------------------------------


def _effects(sources: list[str]) -> list[tuple[int, ...]]:
    """All non-empty subsets of factor indices, main effects first."""
    k = len(sources)
    return [c for r in range(1, k + 1) for c in itertools.combinations(range(k), r)]


def anova_components(y: np.ndarray, sources: list[str]) -> dict:
    """Random-effects ANOVA (one observation per cell) of ``y`` with one axis per source.

    Returns mean squares, degrees of freedom and method-of-moments variance components for every
    main effect and interaction; the highest-order interaction is confounded with residual noise
    and is reported as ``residual``. Estimates may be negative (reported as such).
    """
    y = np.asarray(y, dtype=float)
    k = y.ndim
    if k != len(sources) or k < 2:
        raise ValueError("need one axis per source and at least two sources")
    levels = y.shape
    # effect estimates by inclusion-exclusion of marginal means
    ss, df, effects = {}, {}, {}
    for eff in _effects(sources):
        others = tuple(i for i in range(k) if i not in eff)
        term = np.zeros([levels[i] if i in eff else 1 for i in range(k)])
        for r in range(len(eff) + 1):
            for sub in itertools.combinations(eff, r):
                axes = tuple(i for i in range(k) if i not in sub)
                sign = (-1) ** (len(eff) - r)
                term = term + sign * y.mean(axis=axes, keepdims=True)
        effects[eff] = term
        ss[eff] = float((term**2).sum() * np.prod([levels[i] for i in others]))
        df[eff] = int(np.prod([levels[i] - 1 for i in eff]))
    ms = {e: ss[e] / df[e] for e in ss}
    full = tuple(range(k))
    # E[MS_e] = sum over effects f containing e of (prod of levels not in f) * var_f
    comps = {full: ms[full]}
    for eff in sorted(_effects(sources), key=len, reverse=True):
        if eff == full:
            continue
        above = [f for f in comps if set(eff) < set(f)]
        coef = np.prod([levels[i] for i in range(k) if i not in eff])
        rest = sum(np.prod([levels[i] for i in range(k) if i not in f]) * comps[f] for f in above)
        comps[eff] = (ms[eff] - rest) / coef
    name = lambda e: "residual" if e == full else "x".join(sources[i] for i in e)  # noqa: E731
    return {name(e): {"ss": ss[e], "df": df[e], "ms": ms[e], "component": float(comps[e])} for e in _effects(sources)}


def variance_components(y: np.ndarray, sources: list[str], n_resamples: int, seed: int) -> list[dict]:
    """Variance components with bootstrap standard errors (levels of every factor resampled
    independently with replacement; ``n_resamples`` and ``seed``: config factorial.<name>.bootstrap_resamples
    and metrics.seed) and F-test p-values (quasi-F for main effects of 3 factors)."""
    y = np.asarray(y, dtype=float)
    est = anova_components(y, sources)
    rng = np.random.default_rng(seed)
    boots = {name: [] for name in est}
    for _ in range(n_resamples):
        idx = np.ix_(*[rng.integers(0, n, n) for n in y.shape])
        for name, v in anova_components(y[idx], sources).items():
            boots[name].append(v["component"])
    total = sum(max(v["component"], 0.0) for v in est.values())
    rows = []
    for name, v in est.items():
        rows.append(
            {
                "effect": name,
                "df": v["df"],
                "mean_square": v["ms"],
                "component": v["component"],
                "component_se": float(np.std(boots[name], ddof=1)) if n_resamples else float("nan"),
                **_residual_interval(name, v),
                "share": max(v["component"], 0.0) / total if total > 0 else float("nan"),
                "p_value": _f_test(est, name, sources),
            }
        )
    return rows


def _residual_interval(name: str, v: dict, confidence: float = 0.95) -> dict:
    """The residual's variance: its chi-square interval (df MS / chi2 quantiles; exact under
    normal errors). Its bootstrap ``component_se`` is too small at these sizes (component +- SE
    covered ~77 %); other components get NaN here (no exact interval for a difference of mean
    squares)."""
    if name != "residual" or not v["df"] > 0:
        return {"component_low": float("nan"), "component_high": float("nan")}
    q = (1 - confidence) / 2
    ss = v["df"] * v["ms"]
    low, high = ss / stats.chi2.ppf(1 - q, v["df"]), ss / stats.chi2.ppf(q, v["df"])
    return {"component_low": float(low), "component_high": float(high)}


def _f_test(est: dict, name: str, sources: list[str]) -> float:
    """p-value that the component is 0: exact F against the next stratum, quasi-F (Satterthwaite)
    for main effects in a 3-factor design; NaN for the residual."""
    if name == "residual":
        return float("nan")
    parts = name.split("x")
    residual = est["residual"]
    if len(sources) == 2 or len(parts) == len(sources) - 1:
        f = est[name]["ms"] / residual["ms"]
        return float(stats.f.sf(f, est[name]["df"], residual["df"]))
    # 3 factors, main effect A: (MS_A + MS_R) / (MS_AB + MS_AC)
    inter = [k for k in est if k != "residual" and len(k.split("x")) == 2 and parts[0] in k.split("x")]
    num = est[name]["ms"] + residual["ms"]
    den = sum(est[k]["ms"] for k in inter)
    df_num = num**2 / (est[name]["ms"] ** 2 / est[name]["df"] + residual["ms"] ** 2 / residual["df"])
    df_den = den**2 / sum(est[k]["ms"] ** 2 / est[k]["df"] for k in inter)
    return float(stats.f.sf(num / den, df_num, df_den))


def per_example_split(per_example: np.ndarray) -> dict:
    """Variance over runs of a per-run mean (rows: runs, columns: test examples), split exactly
    into ``indep`` = the sum of per-example variances / n^2 (what independent per-example flips
    would give; it shrinks as 1/n and vanishes with an infinite test set) and ``shared`` = the
    covariance between examples (the rest). ``metrics.accuracy_variance_split`` is this for 0/1
    correctness, in %^2."""
    x = np.asarray(per_example, dtype=float)
    m, n = x.shape
    if m < 2:
        return {"total": float("nan"), "indep": float("nan"), "shared": float("nan")}
    total = float(np.var(x.mean(1), ddof=1))
    indep = float(np.var(x, axis=0, ddof=1).sum() / n**2)
    return {"total": total, "indep": indep, "shared": total - indep}


def per_example_values(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Per-run, per-example correctness (in %) and cross-entropy, shapes (runs, examples): their
    means over examples are the accuracy and cross-entropy of ``nondet.analysis.metrics``."""
    from scipy import special

    logits = np.asarray(logits)
    logp = special.log_softmax(logits.astype(np.float64), axis=-1)
    return {
        "accuracy": 100.0 * (logits.argmax(-1) == labels),
        "cross_entropy": -np.take_along_axis(logp, np.broadcast_to(labels, logp.shape[:-1])[..., None], -1)[..., 0],
    }
