"""The verdict (nondet.analysis.verdict): one procedure decides and the block shows it, outlying
runs are named with what leaving them out would change, plans say what they cannot promise."""

import math

import numpy as np
import pytest

from nondet.analysis import planning
from nondet.analysis.inference import compare
from nondet.analysis.prob_better import clopper_pearson, newcombe
from nondet.analysis.verdict import decide, outlying_runs, verdict, verdict_lines


def _verdict(base, cand, pairs=None, **kw):
    rows = compare({"cross_entropy": np.asarray(base)}, {"cross_entropy": np.asarray(cand)}, pairs=pairs)
    return verdict(rows, **kw)[0]


def test_the_reduced_compare_example_is_not_significant_and_says_why():
    """configs/compare_example.yaml at 3 runs per arm printed SIGNIFICANT beside welch's
    [-0.0008, +0.23], p = 0.051: the decision came from the pooled t behind P(A > B) (p = 0.04),
    which the block did not show. Runs with that shape: pooled p = 0.035, welch p = 0.050."""
    base = [0.5887, 0.6491, 0.6324]  # cross-entropy: lower is better
    cand = [0.7781, 0.6753, 0.7719]
    rows = compare({"cross_entropy": np.array(base)}, {"cross_entropy": np.array(cand)})
    by = {r["test"]: r for r in rows}
    assert by["p_better"]["normal_p"] < 0.05 <= by["welch"]["p_value"]  # the old engine's split
    v = verdict(rows)[0]
    assert v["decision"] == "not significant"
    assert v["p_decision"] == max(by["welch"]["p_value"], by["p_better"]["p_value"]) >= 0.05
    line = verdict_lines("lr", [v])[0]
    assert line.startswith("lr cross_entropy: NOT SIGNIFICANT, p = ")
    assert "(welch, p = 0.0504)" in line and "welch p = 0.0504 >= 0.05" in line


@pytest.mark.parametrize("paired", [False, True])
def test_significant_never_stands_beside_an_interval_reaching_the_null(paired):
    """Over 300 random comparisons (2-8 runs, shifts 0-3 SD, normal and heavy-tailed runs): a
    significant decision has both printed intervals excluding their null, both printed p-values
    and the decision's below alpha; a non-significant one has its decision p >= alpha or the two
    tests pointing opposite ways."""
    rng = np.random.default_rng(30)
    seen = set()
    for _ in range(300):
        r = int(rng.integers(2, 9))
        shift = rng.choice([0.0, 1.0, 3.0])
        base = rng.standard_t(3, r) if rng.random() < 0.5 else rng.normal(0, 1, r)
        cand = rng.normal(shift, 1, r)
        v = _verdict(70 + base, 70 + cand, [(i, i) for i in range(r)] if paired else None)
        sig = v["decision"].startswith("significant")
        seen.add(sig)
        if sig:
            assert not v["diff_low"] <= 0 <= v["diff_high"] and v["p_value"] < 0.05
            assert not v["p_better_low"] <= 0.5 <= v["p_better_high"] and v["p_better_p"] < 0.05
            assert v["p_decision"] < 0.05
        else:
            assert v["p_decision"] >= 0.05 or "opposite ways" in v["why"], v
    assert seen == {True, False}


def test_p_better_parts_and_their_union():
    a, b = np.array([3.0, 4.0, 5.0, 6.0, 7.0]), np.array([1.0, 2.0, 3.5, 2.5, 1.5])
    row = compare({"accuracy": b}, {"accuracy": a})
    pb = next(r for r in row if r["test"] == "p_better")
    for part in ("normal", "bm", "newcombe"):
        assert pb["ci_low"] <= pb[f"{part}_low"] <= pb[f"{part}_high"] <= pb["ci_high"]
    assert pb["p_value"] == max(pb["normal_p"], pb["bm_p"], pb["newcombe_p"])
    # Newcombe's interval is where (theta_hat - theta)^2 = z^2 V(theta): check at an end by hand
    lo, hi, _ = newcombe(0.8, 5, 5, 0.05)
    ns, z = 4.0, 1.959963984540054
    v = lo * (1 - lo) / 25 * (1 + ns * (1 - lo) / (2 - lo) + ns * lo / (1 + lo))
    assert (0.8 - lo) ** 2 == pytest.approx(z * z * v) and lo < 0.8 < hi
    # Clopper-Pearson: 6 wins of 6 is the first to exclude 0.5 at 5 %; 5 of 5 is not
    assert clopper_pearson(5, 5, 0.05)[0] < 0.5 < clopper_pearson(6, 6, 0.05)[0]
    assert clopper_pearson(6, 6, 0.05)[2] == pytest.approx(2 * 0.5**6)


def test_a_diverged_run_is_named_with_what_leaving_it_out_changes():
    """The issue's real example: one baseline run at 91.6 among 95.7-97.1."""
    base = np.array([95.7, 96.1, 91.6, 97.1, 96.4, 96.0])
    cand = np.array([96.9, 97.2, 96.8, 97.5, 97.0, 96.7])
    assert outlying_runs(base) == [(2, pytest.approx(0.6745 * (91.6 - 96.05) / 0.35))]  # MAD 0.35
    assert outlying_runs(cand) == []
    rows = compare({"accuracy": base}, {"accuracy": cand})
    runs = {"baseline": {"accuracy": base}, "candidate": {"accuracy": cand}, "names": {"baseline": list("abcdef")}}
    v = verdict(rows, runs=runs)[0]
    assert v["outliers"].startswith("outlying baseline run c: 91.6 (modified z = -8.6; the other 5 runs 95.7 to 97.1)")
    assert "kept in every test; without it: SIGNIFICANT" in v["outliers"]
    lines = verdict_lines("x", [v])
    assert any(line.startswith("  outlying baseline run c") for line in lines)
    assert v["runs_baseline"] == 6  # never dropped
    # two runs: nothing is called outlying; MAD 0 falls back to the mean absolute deviation
    assert outlying_runs([1.0, 9.0]) == [] and outlying_runs([5.0, 5.0, 5.0, 5.0, 9.0])[0][0] == 4


def test_decide_says_when_the_mean_and_the_typical_run_disagree():
    diff = {"test": "welch", "estimate": 0.4, "p_value": 0.01, "note": ""}
    pb = {"ci_low": 0.05, "ci_high": 0.4, "p_value": 0.02, "note": ""}
    d = decide(diff, pb, 0.75, 0.05)
    assert d["decision"] == "not significant" and "opposite ways" in d["why"]


def test_the_data_distribution_line_says_when_it_equals_welch():
    """Independent per-example flips only: the test-set terms of the two-way variance are 0 in
    expectation, negative about half the time, and then floored: the interval is welch's, and
    the row says so exactly then."""
    rng = np.random.default_rng(4)
    said = []
    for _ in range(20):
        base, cand = 100.0 * (rng.random((4, 200)) < 0.8), 100.0 * (rng.random((4, 200)) < 0.8)
        rows = {r["test"]: r for r in compare({"accuracy": base}, {"accuracy": cand}) if r["metric"] == "accuracy"}
        j, w = rows["joint_paired"], rows["welch"]
        same = (j["ci_low"], j["ci_high"], j["p_value"]) == pytest.approx((w["ci_low"], w["ci_high"], w["p_value"]))
        assert same == j["note"].startswith("equal to the welch interval by construction")
        said.append(same)
        v = verdict(list(rows.values()))[0]
        line = next(x for x in verdict_lines("x", [v]) if "data distribution" in x)
        assert line.startswith("  secondary, on the data distribution") and ("by construction" in line) == same
    assert 0 < sum(said) < 20


def test_plan_notes_instead_of_minus_one():
    rng = np.random.default_rng(9)
    base, cand = 70 + rng.normal(0, 0.5, (3, 1)) + rng.normal(0, 1, (3, 50)), 70 + rng.normal(0, 0.5, (3, 50))
    rows = {r["basis"]: r for r in planning.plan(base, cand, effect=0.0, margin=1.0)}
    assert "effect 0" in rows["pilot_sd"]["note"] and "lower bound" in rows["pilot_sd"]["note"]
    line = planning.plan_line({**rows["pilot_sd"], "metric": "accuracy"})
    assert "-1" not in line.split("):")[1] and "effect 0" in line
    tost = rows["tost"]
    assert tost["replicas_needed"] == planning.tost_replicas(1.0, tost["sd"])
    n = tost["replicas_needed"]
    assert planning.power_tost(n, 1.0, tost["sd"], 0.05) >= 0.8 > planning.power_tost(n - 1, 1.0, tost["sd"], 0.05)
    assert tost["replicas_low"] <= n <= tost["replicas_high"] or tost["replicas_high"] == -1
    neg = {r["basis"]: r for r in planning.plan(base, cand, effect=-1.0)}["pilot_sd"]
    assert "negative effect: planned to detect a candidate worse by 1" in neg["note"] and neg["replicas_needed"] > 0
    loss = planning.plan(base, cand, effect=-1.0, higher_is_better=False)[0]
    assert "a candidate better by 1 (lower)" in loss["note"]
    line = planning.plan_line({**neg, "metric": "accuracy"})
    assert "replicas per arm (range" in line
    runs_only = planning.plan(base.mean(1), cand.mean(1), effect=1.0)
    assert [r["basis"] for r in runs_only] == ["pilot_sd", "p_better"]
    assert not math.isnan(runs_only[0]["sd"])


@pytest.mark.slow
def test_the_compare_stage_writes_the_new_verdict(tmp_path):
    """Rules compare / runs_compare end to end in-process on imported runs: the decision line
    with its p, the deciding sentence, an outlying run named by replica, the plan's range."""
    from nondet.io.runs import import_group
    from nondet.workflow.compare_stages import compare as compare_stage

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 400)
    np.save(tmp_path / "y.npy", labels)
    paths = {}
    for arm, skills in (("base", [1.0, 1.02, 0.98, 1.01, 0.2]), ("cand", [1.3, 1.31, 1.29, 1.3, 1.32])):
        (tmp_path / arm).mkdir()
        for r, skill in enumerate(skills):
            logits = rng.normal(0, 0.3, (400, 3))
            logits[np.arange(400), labels] += skill
            np.save(tmp_path / arm / f"run{r}.npy", logits.astype(np.float32))
        spec = {"model": "m", "predictions": f"{tmp_path}/{arm}/*.npy", "labels": str(tmp_path / "y.npy")}
        paths[arm] = tmp_path / f"{arm}.h5"
        import_group(spec, arm, paths[arm], log=lambda *a: None)
    out = {k: tmp_path / f"out.{k}" for k in ("csv", "verdict", "md", "plan", "pdf", "png")}
    params = {
        "name": "x", "alpha": 0.05, "gamma": 0.75, "held_fixed": "", "margin": {"accuracy": 1.0},
        "margin_kind": "equivalence", "effect": {"accuracy": 0.0}, "power": 0.8, "on_diverged": "exclude",
        "paired_by": None, "baseline": "base", "candidate": "cand",
    }  # fmt: skip
    compare_stage([paths["base"]], [paths["cand"]], out, params, log_path=tmp_path / "log.txt")
    md, log = out["md"].read_text(), (tmp_path / "log.txt").read_text()
    assert "**x accuracy: " in md and "decided by: welch and P(A > B) must both reject" in md
    assert "outlying baseline run replica 4" in md and "without it: " in md
    assert all(x.startswith("- outlying ") for x in md.splitlines() if "without it" in x)
    assert "effect 0: no number of runs detects no difference" in log
    assert "plan accuracy (tost, effect +1" in log and "replicas per arm (range" in log
    import csv

    v = {r["metric"]: r for r in csv.DictReader(open(out["verdict"]))}
    assert float(v["accuracy"]["p_decision"]) >= float(v["accuracy"]["p_value"])


def test_power_is_finite_far_in_the_tail():
    """scipy's nct.cdf(-1.97, 248, 9.9) is NaN; the power of 125 runs per arm at 1.25 SD is ~1."""
    assert planning.power_two_sample(125, 1.25, 1.0, 0.05) == pytest.approx(1.0)
    assert planning.replicas_needed(1.25, 3.5) == planning.replicas_needed(1.25 / 3.5, 1.0)


def test_all_pairs_prints_simultaneous_intervals_beside_the_per_pair_ones():
    """Three groups x two metrics: a family of 6 per test; Bonferroni's intervals (each at
    alpha / 6) contain the per-pair ones, and the note says which is which."""
    from nondet.analysis.inference import all_pairs, welch

    rng = np.random.default_rng(12)
    groups = {
        g: {"accuracy": 100.0 * (rng.random((4, 200)) < 0.8), "cross_entropy": rng.random((4, 200))} for g in "xyz"
    }
    rows = all_pairs(groups)
    for r in rows:
        if np.isfinite(r["ci_low"]):
            assert r["ci_low_simultaneous"] <= r["ci_low"] <= r["ci_high"] <= r["ci_high_simultaneous"]
        assert r["ci_note"].startswith("ci: per pair, not adjusted; ci_*_simultaneous: Bonferroni over 6")
    w = next(r for r in rows if r["test"] == "welch" and r["candidate"] == "y" and r["metric"] == "accuracy")
    ref = welch(groups["y"]["accuracy"].mean(1), groups["x"]["accuracy"].mean(1), 0.05 / 6)
    assert (w["ci_low_simultaneous"], w["ci_high_simultaneous"]) == pytest.approx((ref["ci_low"], ref["ci_high"]))
