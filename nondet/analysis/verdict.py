"""The verdict: one decision per metric from ``nondet.analysis.inference.compare``'s rows, and
the sentences that print it.

One procedure decides, and the block shows it: the candidate is *significant* when the
difference test (``paired_runs`` when runs are paired by seed, else ``welch``) and the P(A > B)
test (``p_better``: the union interval of a normal-model and rank-based parts) both reject at
alpha in the same direction. That is an intersection-union test: its p-value is the larger of
the two, printed on the decision line, and a "significant" never stands beside an interval that
reaches 0 (difference) or 0.5 (P(A > B)) or a p above alpha. *Meaningful* follows Bouthillier
et al. (MLSys 2021): the interval of P(A > B) reaches gamma (1 - gamma for a worse candidate).
Everything else printed (the data-distribution question, welch beside a paired decision, TOST,
flips) is labelled secondary. Runs far from the rest of their arm are named, with the decision
the same engine gives without them (``outlying_runs``); none is ever dropped.
"""

from __future__ import annotations

import math

import numpy as np

from nondet.analysis.inference import compare
from nondet.analysis.rows import VerdictError

DECISIONS = ("not significant", "significant but not meaningful", "significant and meaningful")

#: A run is named as outlying when its modified z-score (Iglewicz & Hoaglin 1993:
#: 0.6745 (x - median) / MAD; MAD = 0: (x - median) / (1.2533 mean |x - median|)) exceeds this.
OUTLIER_Z = 3.5


def _finite(*xs) -> bool:
    return all(np.isfinite(x) for x in xs)


def decide(diff: dict, pb: dict, gamma: float, alpha: float, higher_is_better: bool = True) -> dict:
    """The decision from the difference row and the p_better row: ``decision``, ``why``,
    ``p_decision`` (the intersection-union p: the larger of the two) and ``decided_by``."""
    lo, hi = pb["ci_low"], pb["ci_high"]
    decided_by = f"{diff['test']} and P(A > B) must both reject at alpha = {alpha:g} (p: the larger)"
    out = {"decided_by": decided_by, "p_decision": math.nan}
    if pb["note"].startswith("no run-to-run variation"):
        exact = "identical arms" if diff["estimate"] == 0 else "exact difference (no run-to-run noise)"
        return {**out, "decision": exact, "why": pb["note"]}
    if not _finite(lo, hi, diff["p_value"], pb["p_value"]):
        why = pb["note"] if not _finite(lo, hi) else (diff["note"] or "the difference has no p-value")
        return {**out, "decision": "no verdict", "why": why or "P(A > B) has no interval"}
    p = max(diff["p_value"], pb["p_value"])
    out["p_decision"] = p
    mean_better = (diff["estimate"] > 0) == higher_is_better
    diff_sig, pb_sig = diff["p_value"] < alpha, not lo <= 0.5 <= hi
    if diff_sig and pb_sig and mean_better != (lo > 0.5):
        why = (
            "the mean difference and P(A > B) point opposite ways (the mean says the candidate is "
            f"{'better' if mean_better else 'worse'}, the typical run the reverse): look at the runs"
        )
        return {**out, "decision": DECISIONS[0], "why": why}
    if not (diff_sig and pb_sig):
        parts = []
        if not diff_sig:
            parts.append(f"{diff['test']} p = {diff['p_value']:.3g} >= {alpha:g}")
        if not pb_sig:
            parts.append(f"the interval of P(A > B) reaches 0.5 (p = {pb['p_value']:.3g})")
        return {**out, "decision": DECISIONS[0], "why": " and ".join(parts)}
    better = lo > 0.5
    meaningful = hi >= gamma if better else lo <= 1 - gamma
    side = "better" if better else "worse"
    bound = f"gamma = {gamma:g}" if better else f"1 - gamma = {1 - gamma:g}"
    why = (
        f"both reject; the interval of P(A > B) lies {'above' if better else 'below'} 0.5 and "
        f"{'reaches' if meaningful else 'stays short of'} {bound}"
    )
    return {**out, "decision": f"{DECISIONS[2] if meaningful else DECISIONS[1]} (candidate {side})", "why": why}


def outlying_runs(values) -> list[tuple[int, float]]:
    """(index, modified z) of each run whose modified z-score exceeds ``OUTLIER_Z`` (>= 3 runs)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) < 3:
        return []
    dev = x - np.median(x)
    mad = np.median(np.abs(dev))
    if mad > 0:
        z = 0.6745 * dev / mad
    else:
        mean_ad = np.mean(np.abs(dev))
        if not mean_ad > 0:
            return []
        z = dev / (1.253314 * mean_ad)
    return [(int(i), float(z[i])) for i in np.flatnonzero(np.abs(z) > OUTLIER_Z)]


def _without(runs: dict, metric: str, arm: str, i: int, gamma, alpha, hib) -> str:
    """The decision the same engine gives with run ``i`` of ``arm`` left out (its pair too)."""
    base, cand = np.asarray(runs["baseline"][metric]), np.asarray(runs["candidate"][metric])
    pairs = runs.get("pairs")
    if pairs is not None:
        pairs = [(c, b) for c, b in pairs if (b if arm == "baseline" else c) != i]
    else:
        keep = np.arange(len(base if arm == "baseline" else cand)) != i
        base, cand = (base[keep], cand) if arm == "baseline" else (base, cand[keep])
    left = len(pairs) if pairs is not None else min(len(base), len(cand))
    if left < 2:
        return f"without it {left} run(s) would remain: no comparison"
    rows = compare({metric: base}, {metric: cand}, alpha, pairs, correct=False, higher_is_better={metric: hib})
    by = {r["test"]: r for r in rows}
    diff = by.get("paired_runs", by["welch"])
    d = decide(diff, by["p_better"], gamma, alpha, hib)
    return (
        f"without it: {d['decision'].upper()}, candidate - baseline = {diff['estimate']:+.4g} "
        f"[{diff['ci_low']:+.4g}, {diff['ci_high']:+.4g}], P(candidate better) = {by['p_better']['estimate']:.2f}"
    )


def _outliers(runs: dict, metric: str, gamma, alpha, hib) -> list[str]:
    notes = []
    for arm in ("baseline", "candidate"):
        x = np.asarray(runs[arm][metric], dtype=np.float64)
        names = runs.get("names", {}).get(arm) or [f"run {i}" for i in range(len(x))]
        for i, z in outlying_runs(x):
            others = np.delete(x, i)
            notes.append(
                f"outlying {arm} run {names[i]}: {x[i]:.4g} (modified z = {z:+.1f}; the other "
                f"{len(others)} runs {others.min():.4g} to {others.max():.4g}); kept in every test; "
                + _without(runs, metric, arm, i, gamma, alpha, hib)
            )
    return notes


def verdict(
    rows: list[dict], gamma: float = 0.75, alpha: float = 0.05, held_fixed: str = "", runs: dict | None = None
) -> list[dict]:
    """One readable verdict per metric from ``compare``'s rows (module docstring). ``runs``:
    optional {"baseline": {metric: run scores}, "candidate": {...}, "names": {arm: [labels]},
    "pairs": [(candidate row, baseline row)] or None} to name outlying runs."""
    if not 0.5 < gamma < 1:
        raise VerdictError(f"gamma must lie in (0.5, 1) (got {gamma})")
    out = []
    for metric in dict.fromkeys(r["metric"] for r in rows):
        by = {r["test"]: r for r in rows if r["metric"] == metric}
        diff = by.get("paired_runs", by["welch"])
        pb = by["p_better"]
        hib = bool(pb.get("higher_is_better", True))
        runs_min = min(diff["n_baseline"], diff["n_candidate"])
        row = {
            "metric": metric,
            **decide(diff, pb, gamma, alpha, hib),
            "difference": diff["estimate"],
            "diff_low": diff["ci_low"],
            "diff_high": diff["ci_high"],
            "diff_test": diff["test"],
            "diff_note": diff["note"],
            "p_value": diff["p_value"],
            "p_better": pb["estimate"],
            "p_better_low": pb["ci_low"],
            "p_better_high": pb["ci_high"],
            "p_better_p": pb["p_value"],
            "p_better_definition": pb.get("definition", ""),
            "p_better_interval": pb["note"],
            "gamma": gamma,
            "runs_baseline": diff["n_baseline"],
            "runs_candidate": diff["n_candidate"],
            "held_fixed": held_fixed,
        }
        perm = by.get("permutation")
        row["small_sample"] = ""
        if perm is not None and perm["min_p"] > alpha:
            if perm.get("paired"):
                chance = (
                    f"the candidate winning every one of {runs_min} seed pairs happens by chance 1 time "
                    f"in {2**runs_min}"
                )
            else:
                chance = (
                    "all candidate runs beating all baseline runs happens by chance 1 time in "
                    f"{math.comb(diff['n_baseline'] + diff['n_candidate'], diff['n_candidate'])}"
                )
            lean = (
                "; a significant decision here leans on the normal-model part of the test"
                if row["decision"].startswith("significant")
                else ""
            )
            row["small_sample"] = (
                f"with {runs_min} runs per arm no exact distribution-free test can reach p < {alpha:g} "
                f"(smallest two-sided p: {perm['min_p']:.3g}; {chance}){lean}"
            )
        if diff["test"] == "paired_runs":
            w = by["welch"]
            row.update(welch_low=w["ci_low"], welch_high=w["ci_high"], welch_p=w["p_value"])
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
            row["equivalence"] = (
                f"secondary: {'' if ok else 'not shown '}{what} {t['margin']:g} (TOST p = {t['p_value']:.3g})"
            )
        if "fixes" in by:
            f, g = by["fixes"], by["regressions"]
            row.update(fixes=f["estimate"], fixes_low=f["ci_low"], fixes_high=f["ci_high"])
            row.update(regressions=g["estimate"], regressions_low=g["ci_low"], regressions_high=g["ci_high"])
        row["outliers"] = " | ".join(_outliers(runs, metric, gamma, alpha, hib)) if runs else ""
        out.append(row)
    return out


def _no_interval(note: str) -> str:
    """What a line says in place of an interval and p-value that were withheld or cannot exist."""
    if not note:
        return "no interval"
    if note.startswith("no run-to-run variation"):
        return "no run-to-run variation: every run of an arm scores the same; no interval or p-value"
    return note


def verdict_lines(name: str, verdicts: list[dict], units=None) -> list[str]:
    """The verdict as sentences, one block per metric (logs, verdict.md, ``python -m nondet
    verdict``): the decision with its p, then the two intervals it was decided on, then the
    secondary lines, each labelled. A withheld interval is replaced by the reason."""
    units = units or {"accuracy": " points", "cross_entropy": " nats"}
    lines = []
    for v in verdicts:
        u = units.get(v["metric"], "")
        p = f", p = {v['p_decision']:.3g}" if _finite(v["p_decision"]) else ""
        if _finite(v["diff_low"], v["diff_high"], v["p_value"]):
            diff = f"[{v['diff_low']:+.4g}, {v['diff_high']:+.4g}] ({v['diff_test']}, p = {v['p_value']:.3g})"
        else:
            diff = f"({v['diff_test']}: {_no_interval(v.get('diff_note', ''))})"
        if _finite(v["p_better_low"], v["p_better_high"]):
            pp = f", p = {v['p_better_p']:.3g}" if _finite(v.get("p_better_p", math.nan)) else ""
            pb = f"{v['p_better']:.2f} [{v['p_better_low']:.2f}, {v['p_better_high']:.2f}]{pp}"
        else:
            pb = f"{v['p_better']:.2f} (no interval)"
        lines.append(
            f"{name} {v['metric']}: {v['decision'].upper()}{p}. candidate - baseline = {v['difference']:+.4g}{u} "
            f"{diff}; P(candidate better) = {pb} ({v['p_better_definition']}); "
            f"{v['runs_baseline']} vs {v['runs_candidate']} runs; {v['why']}."
        )
        lines.append(f"  decided by: {v['decided_by']}; P(A > B) {v['p_better_interval']}")
        if v.get("outliers"):
            lines += [f"  {x}" for x in v["outliers"].split(" | ") if x]
        if "welch_low" in v and _finite(v["welch_low"], v["welch_high"], v["welch_p"]):
            lines.append(
                f"  secondary, runs unpaired (welch): [{v['welch_low']:+.4g}, {v['welch_high']:+.4g}], "
                f"p = {v['welch_p']:.3g}"
            )
        if "fixes" in v:
            lines.append(
                f"  secondary, per example: {v['fixes']:.1f} fixes [{v['fixes_low']:.1f}, {v['fixes_high']:.1f}] "
                f"and {v['regressions']:.1f} regressions [{v['regressions_low']:.1f}, "
                f"{v['regressions_high']:.1f}] per pair of runs"
            )
        if "distribution_low" in v:
            where = "  secondary, on the data distribution (a new test set of this size): "
            note = v.get("distribution_note", "")
            if _finite(v["distribution_low"], v["distribution_high"], v["distribution_p"]):
                same = " " + note if note.startswith("equal to") else ""
                lines.append(
                    f"{where}[{v['distribution_low']:+.4g}, {v['distribution_high']:+.4g}], "
                    f"p = {v['distribution_p']:.3g}{same}"
                )
            else:
                lines.append(where + _no_interval(note))
        for key in ("equivalence", "small_sample", "held_fixed"):
            if v.get(key):
                lines.append(f"  {v[key]}")
    return lines


def verdict_markdown(name: str, baseline: str, candidate: str, lines: list[str], csv_path, plan_path) -> str:
    """The verdict in words (the compare stage's ``md``): a heading, ``lines`` (verdict_lines), and
    where every test (``csv_path``) and the replicas per arm (``plan_path``) are."""
    text = [f"# Comparison {name}: {candidate} against {baseline}", ""]
    text += [f"- {line.strip()}" if line.startswith("  ") else f"\n**{line}**\n" for line in lines]
    text += [
        "",
        f"Every test: {csv_path}; replicas per arm: {plan_path}. "
        "Engine: nondet.analysis (inference, prob_better, verdict); calibration at 2-16 runs per arm, "
        "misbehaving runs included: docs/comparisons.md.",
        "",
    ]
    return "\n".join(text)
