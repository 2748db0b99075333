"""Planning: replicas per arm for an effect the user names, from pilot runs.

``plan`` rows (``plan.csv``; the log prints each with its range): ``pilot_sd`` (the two-sample
t-test's size from the pilots' pooled SD, with the replicas at the ends of the SD's chi-square
interval: the range the pilots' own uncertainty leaves), ``indep_only`` (the SD independent
per-example flips alone give: a lower bound), ``distribution`` (a new test set), ``tost`` (the
equivalence question at a margin: replicas for TOST to show equivalence when the true difference
is 0) and ``p_better`` (the Noether size of the P(A > B) test). With fewer than
``PILOT_LOWER_BOUND`` pilot runs per arm the plan is a lower bound (planned from 2 / 3 / 5 / 8
pilot runs, the achieved power averaged 60 / 71 / 76 / 79 % against a stated 80 %: the pilot SD
is too often small). An effect of 0 gets a note, not a number.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from nondet.analysis.inference import variance_terms
from nondet.analysis.rows import VerdictError, scale_of, zero

#: Below this many pilot runs per arm, a plan is labelled a lower bound.
PILOT_LOWER_BOUND = 5


def power_two_sample(n: int, delta: float, sd: float, alpha: float) -> float:
    """Power of the two-sided two-sample t-test with n replicas per arm (noncentral t)."""
    if n < 2 or not sd > 0:
        return float("nan")
    df = 2 * n - 2
    nc = abs(delta) / (sd * math.sqrt(2.0 / n))
    t_crit = stats.t.ppf(1 - alpha / 2, df)
    lower = stats.nct.cdf(-t_crit, df, nc)  # the wrong tail: scipy gives NaN far out in it (~0 there)
    return float(stats.nct.sf(t_crit, df, nc) + (lower if np.isfinite(lower) else 0.0))


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
    return _smallest_n(lambda n: power_two_sample(n, delta, sd, alpha), power, max_n)


def _smallest_n(power_at, power: float, max_n: int) -> int:
    """The first n with ``power_at(n) >= power`` (power rises with n: doubling, then bisection);
    -1 above ``max_n``."""
    lo, hi = 1, 2
    while power_at(hi) < power:
        lo, hi = hi, 2 * hi
        if lo > max_n:
            return -1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if power_at(mid) >= power else (mid, hi)
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
    margin=None,
    higher_is_better: bool = True,
) -> list[dict]:
    """Replicas per arm from pilot runs' per-example values (runs, n) of each arm, or run scores
    (runs,) (then no ``indep_only`` / ``distribution`` rows).

    ``effect`` (candidate - baseline, in the metric's units) is the user's; without it the plan
    is for the observed difference and labelled ``observed (post hoc)`` (it is a function of the
    p-value, and planning more runs from it invites optional stopping). Rows: ``pilot_sd`` and
    ``indep_only`` (this test set, with an interval for the SD and the replicas at its ends),
    ``distribution`` (a new test set: says when the effect cannot be reached by more runs), and
    ``p_better`` (the Noether size for gamma, which needs no pilots); with ``margin``, ``tost``.
    ``note`` says when the plan is a lower bound (fewer than ``PILOT_LOWER_BOUND`` pilot runs
    per arm), when the effect is 0 (no number of runs detects no difference: ask the equivalence
    question instead) and when it is negative (a worse candidate, planned on |effect|)."""
    a, b = np.asarray(candidate, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    per_example = a.ndim == 2
    ra, rb = len(a), len(b)
    df = ra + rb - 2
    if min(ra, rb) < 2:
        raise VerdictError("planning needs at least 2 pilot runs per arm")
    label = "named (config effect)"
    if effect is None:
        effect, label = zero(float(a.mean() - b.mean()), scale_of(a, b)), "observed (post hoc)"
    ma, mb = (a.mean(1), b.mean(1)) if per_example else (a, b)
    pooled = ((ra - 1) * np.var(ma, ddof=1) + (rb - 1) * np.var(mb, ddof=1)) / df
    notes = []
    if min(ra, rb) < PILOT_LOWER_BOUND:
        notes.append(
            f"a lower bound: planned from {min(ra, rb)} pilot runs per arm (< {PILOT_LOWER_BOUND}), a "
            "pilot SD is too often small; plan again after more runs, or use replicas_high"
        )
    if effect == 0 or not np.isfinite(effect):
        notes.append(
            "effect 0: no number of runs detects no difference; to show the arms agree, name a margin "
            "(the tost row) instead"
        )
    elif effect < 0:
        side = "worse" if higher_is_better else "better"
        notes.append(f"negative effect: planned to detect a candidate {side} by {abs(effect):.4g} (lower)")
    lead = "; ".join(notes)
    sd = math.sqrt(pooled)
    q = (1 - confidence) / 2
    sd_int = (sd * math.sqrt(df / stats.chi2.ppf(1 - q, df)), sd * math.sqrt(df / stats.chi2.ppf(q, df)))
    bases = [("pilot_sd", sd, sd_int)]
    part = math.nan
    if per_example:
        n = a.shape[1]
        v = ((ra - 1) * np.var(a, axis=0, ddof=1) + (rb - 1) * np.var(b, axis=0, ddof=1)) / df
        part, part_se = v.mean() / n, v.std(ddof=1) / math.sqrt(n) / n
        z = stats.norm.ppf(1 - q)
        ts_int = (math.sqrt(max(0.0, part - z * part_se)), math.sqrt(part + z * part_se))
        bases.append(("indep_only", math.sqrt(part), ts_int))
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
    for basis, s, (lo, hi) in bases:
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
                "note": lead,
            }
        )
    if margin is not None:
        rows.append(_tost_row(common, margin, sd, sd_int, alpha, power, lead))
    if not per_example:
        return rows + [_noether_row(common, gamma, alpha, power)]
    # the distribution question: Var = 2 sd_run^2 / R + the test-set term, which more runs leave
    terms = variance_terms(a, b, True, False)
    test_term = max(0.0, sum(c * s2 for c, s2, _ in terms[2:]))
    zz = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    reach = zz * math.sqrt(test_term)
    if effect == 0 or not np.isfinite(effect):
        need, note = -1, lead
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
    return rows + [_noether_row(common, gamma, alpha, power)]


def _noether_row(common, gamma, alpha, power) -> dict:
    return {
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


def power_tost(n: int, margin: float, sd: float, alpha: float) -> float:
    """Power of TOST at +-margin with n replicas per arm when the true difference is 0 (two
    one-sided t-tests at alpha; the t approximation 2 F_t(margin / se - t_{1-alpha}) - 1)."""
    if n < 2 or not sd > 0:
        return float("nan")
    df = 2 * n - 2
    se = sd * math.sqrt(2.0 / n)
    return float(max(0.0, 2 * stats.t.cdf(margin / se - stats.t.ppf(1 - alpha, df), df) - 1))


def tost_replicas(margin: float, sd: float, alpha: float = 0.05, power: float = 0.8, max_n: int = MAX_REPLICAS) -> int:
    """Smallest replicas per arm for TOST to show equivalence within +-margin when the arms are
    equal, at ``power``; -1 above ``max_n`` or without noise."""
    if not (margin > 0 and sd > 0):
        return -1
    return _smallest_n(lambda n: power_tost(n, margin, sd, alpha), power, max_n)


def _tost_row(common, margin, sd, sd_int, alpha, power, lead) -> dict:
    lo, hi = sd_int
    return {
        **common,
        "basis": "tost",
        "effect": margin,
        "effect_is": "equivalence margin (true difference 0)",
        "sd": sd,
        "sd_low": lo,
        "sd_high": hi,
        "replicas_needed": tost_replicas(margin, sd, alpha, power),
        "replicas_low": tost_replicas(margin, lo, alpha, power) if lo > 0 else 2,
        "replicas_high": tost_replicas(margin, hi, alpha, power),
        "indep_share": math.nan,
        "note": "; ".join(x for x in ("TOST at +-margin, the arms truly equal", lead.split("; effect 0")[0]) if x),
    }


def plan_line(r: dict) -> str:
    """One plan row as the log prints it: the replicas, their range from the pilots' SD interval
    and the row's note (a plan that cannot give a number says why instead of -1)."""
    head = f"plan {r.get('metric', '')} ({r['basis']}, effect {r['effect']:+.4g}, {r['effect_is']}): "
    need = r["replicas_needed"]
    if need is None or not need > 0:
        return head + (r["note"] or "no number of replicas reaches this power")
    text = f"{need} replicas per arm"
    lo, hi = r.get("replicas_low", math.nan), r.get("replicas_high", math.nan)
    if np.isfinite(lo) and np.isfinite(hi):
        top = "more than the cap" if hi < 0 else f"{hi:g}"
        text += f" (range {lo:g} to {top} over the {100 * r['confidence']:g} % interval of the pilot SD)"
    return head + text + (f"; {r['note']}" if r["note"] else "")
