"""The rows every test of the verdict engine returns, and what they share: the error, float
residue, t rows, degenerate rows and Holm's correction (one place for each)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

#: Relative size below which a difference of means is float residue, not a difference.
RESIDUE = 1e-9


class VerdictError(ValueError):
    """A comparison cannot be made (too few runs, different test sets, bad margin or gamma)."""


def zero(x: float, scale: float) -> float:
    """``x`` with float residue (|x| <= RESIDUE * scale) set to exactly 0."""
    return 0.0 if abs(x) <= RESIDUE * max(scale, 1e-300) else float(x)


def scale_of(*arrays) -> float:
    return max(float(np.max(np.abs(x))) if np.size(x) else 0.0 for x in arrays) or 1.0


def row(test, estimate, ci=(math.nan, math.nan), p=math.nan, df=math.nan, se=math.nan, **extra) -> dict:
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


def t_row(test, estimate, var_terms, alpha, floor_terms=None, null=0.0, **extra) -> dict | None:
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
    return row(test, estimate, (estimate - q * se, estimate + q * se), p, df, se, **extra)


def degenerate(test, estimate, **extra) -> dict:
    """No run-to-run variation was measured (every run of an arm gives the same value)."""
    if estimate == 0:
        note = "no run-to-run variation and no difference: the arms are identical"
        return row(test, 0.0, (0.0, 0.0), 1.0, note=note, calibrated=False, **extra)
    return row(
        test,
        estimate,
        note="no run-to-run variation was measured: the difference is exact on this test set, "
        "but no interval or p-value can be given",
        calibrated=False,
        **extra,
    )


def holm(p_values) -> np.ndarray:
    """Holm-corrected p-values, NaNs staying NaN: the k-th smallest of m times (m - k + 1), made
    monotone, at most 1. Equal to statsmodels' multipletests(method="holm") (a test checks it);
    written out because importing statsmodels imports pandas, a second of the command line's
    time."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if len(ok):
        order = ok[np.argsort(p[ok], kind="stable")]
        m = len(order)
        adj = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
        out[order] = adj
    return out


def add_holm(rows: list[dict]) -> None:
    """``p_holm`` on every row: Holm over the rows of each test (the family: every metric, and
    every pair of groups in ``all_pairs``)."""
    for test in dict.fromkeys(r["test"] for r in rows):
        sub = [r for r in rows if r["test"] == test]
        for r, p in zip(sub, holm([r["p_value"] for r in sub])):
            r["p_holm"] = float(p)
