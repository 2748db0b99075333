"""The verdict engine (nondet.analysis.inference): references from scipy/statsmodels and hand-computed
cases, calibration at 3 runs per arm with fixed seeds (the full table at 2-8 runs is
benchmarks/calibration.py's), degenerate inputs and bad input."""

import math
import time

import numpy as np
import pytest
from scipy import stats

from nondet.analysis import inference as inf
from nondet.analysis import planning as plan_mod
from nondet.analysis import verdict as ver


def simulate(rng, runs, n, run_sd=0.15, tau=0.0, shared_seeds=False):
    """Per-example correctness (%) and cross-entropy of two arms on n fresh test examples, as in
    benchmarks/calibration.py: margins u -+ w per example (w symmetric: equally good arms on the
    data distribution), a run offset per seed, N(0, 1) flips per (run, example)."""
    u, w = rng.normal(1.0, 1.5, n), rng.normal(0, tau, n) if tau else np.zeros(n)
    sa = rng.normal(0, run_sd, (runs, 1))
    sb = sa if shared_seeds else rng.normal(0, run_sd, (runs, 1))
    za, zb = u - w + sa + rng.normal(0, 1, (runs, n)), u + w + sb + rng.normal(0, 1, (runs, n))
    arm = lambda z: {"accuracy": 100.0 * (z > 0), "cross_entropy": np.logaddexp(0, -z)}  # noqa: E731
    return arm(zb), arm(za)  # baseline, candidate


def rows_by_test(rows, metric="accuracy"):
    return {r["test"]: r for r in rows if r["metric"] == metric}


# --- calibration at 3 runs per arm (each failed on the engine before: percentile bootstrap
# intervals covered ~80 %, the joint test's normal quantile rejected 10-14 %) ----------------


@pytest.fixture(scope="module")
def null_trials():
    """400 comparisons at 3 runs per arm, run noise dominant, no difference (every truth 0)."""
    rng = np.random.default_rng(21)
    return [inf.compare(*simulate(rng, 3, 300), correct=False) for _ in range(400)]


@pytest.mark.parametrize("test", ["welch", "joint_paired", "p_better"])
def test_size_and_coverage_at_three_runs_per_arm(null_trials, test):
    """At nominal 5 %: <= 6.5 % rejections, >= 93 % coverage of the truth (0; P = 0.5). 400
    trials: SE of a 5 % rate 1.1 points, of a 95 % coverage 1.1 points; limits 1.5-2 SE from
    nominal, far from the 10-20 % / 80 % the old engine had here (measured: welch 3.5 / 96.5 %,
    joint_paired 4.8 / 95.2 %, p_better 4.75 / 95.25 % with the union interval, 5.0 / 95.0 % before)."""
    truth = 0.5 if test == "p_better" else 0.0
    rows = [rows_by_test(t)[test] for t in null_trials]
    rejected = np.mean([r["p_value"] < 0.05 for r in rows])
    covered = np.mean([r["ci_low"] <= truth <= r["ci_high"] for r in rows])
    assert rejected <= 0.065 and covered >= 0.93, (rejected, covered)
    # the interval and the p-value agree: the interval excludes the null exactly when p < 0.05
    for r in rows:
        assert (r["p_value"] < 0.05) == (not r["ci_low"] <= truth <= r["ci_high"])


def test_paired_by_seed_at_three_runs(null_trials):
    rng = np.random.default_rng(22)
    pairs = [(i, i) for i in range(3)]
    rows = [
        rows_by_test(inf.compare(*simulate(rng, 3, 300, run_sd=0.3, shared_seeds=True), pairs=pairs, correct=False))
        for _ in range(400)
    ]
    for test, truth in (("paired_runs", 0.0), ("p_better", 0.5)):
        rejected = np.mean([r[test]["p_value"] < 0.05 for r in rows])
        covered = np.mean([r[test]["ci_low"] <= truth <= r[test]["ci_high"] for r in rows])
        assert rejected <= 0.065 and covered >= 0.93, (test, rejected, covered)
    assert all(r["p_better"]["definition"].startswith("paired runs") for r in rows)


def test_a_planted_effect_is_found():
    rng = np.random.default_rng(23)
    hits = []
    for _ in range(60):
        base, cand = simulate(rng, 5, 500, run_sd=0.02)
        cand["accuracy"] = cand["accuracy"] + 6.0  # +6 points: ~3 run-to-run SDs (flips alone ~2)
        v = ver.verdict(inf.compare(base, cand, correct=False))[0]
        hits.append(v["decision"].startswith("significant and meaningful (candidate better)"))
    assert np.mean(hits) > 0.9


# --- references ---------------------------------------------------------------------------------


def test_welch_and_paired_rows_are_scipys():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1, 1, 4), rng.normal(0, 2, 3)
    row = inf.welch(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert (row["p_value"], row["ci_low"], row["ci_high"], row["df"]) == pytest.approx(
        (ref.pvalue, ci.low, ci.high, ref.df)
    )
    b = rng.normal(0, 1, 4)
    row, ref = inf.paired_runs(a, b), stats.ttest_rel(a, b)
    assert row["p_value"] == pytest.approx(ref.pvalue) and row["ci_low"] == pytest.approx(ref.confidence_interval().low)


def test_permutation_is_scipys_exact_test_and_states_its_floor():
    rng = np.random.default_rng(2)
    diff = lambda x, y, axis=-1: x.mean(axis) - y.mean(axis)  # noqa: E731
    for ra, rb in ((2, 2), (3, 4), (5, 5)):
        a, b = rng.normal(0.5, 1, ra), rng.normal(0, 1, rb)
        ref = stats.permutation_test((a, b), diff, permutation_type="independent", n_resamples=np.inf, vectorized=True)
        row = inf.permutation(a, b)
        assert row["p_value"] == pytest.approx(ref.pvalue)
        assert row["min_p"] == pytest.approx(2 / math.comb(ra + rb, ra))
        ref = stats.permutation_test(
            (a[:ra] - b[:ra],),
            lambda d, axis=-1: d.mean(axis),
            permutation_type="samples",
            n_resamples=np.inf,
            vectorized=True,
        )
        assert inf.permutation(a[:ra], b[:ra], paired=True)["p_value"] == pytest.approx(ref.pvalue)
    # 2 runs per arm: 1/3 at best (both candidate runs beating both baseline runs: 1 in 6 by chance)
    assert inf.permutation([2.0, 3.0], [0.0, 1.0])["p_value"] == pytest.approx(1 / 3)
    # 5 seed pairs all won: 2 / 2^5 = 0.0625, the floor of an exact Wilcoxon with 5 pairs too
    won = inf.permutation([1.0, 2, 3, 4, 5], [0.0, 1, 2, 3, 4.5], paired=True)
    assert won["p_value"] == won["min_p"] == 0.0625
    assert stats.wilcoxon([1.0, 1, 1, 1, 0.5], method="exact").pvalue == 0.0625


@pytest.mark.parametrize("runs, paired", [(20, False), (29, True)])
def test_permutation_with_many_runs_is_seeded_monte_carlo(runs, paired):
    """C(40, 20) ~ 1.4e11 splits and 2^29 sign flips: enumerating them ran out of memory (R = 12
    per arm took 773 MB). Above PERMUTATION_EXACT_MAX arrangements: seeded Monte Carlo, the same
    p on every call, its floor 2 / (resamples + 1)."""
    rng = np.random.default_rng(12)
    a, b = rng.normal(0.3, 1, runs), rng.normal(0, 1, runs)
    row = inf.permutation(a, b, paired=paired)
    assert 0 < row["p_value"] <= 1 and "Monte Carlo" in row["note"]
    assert row["min_p"] == pytest.approx(2 / (inf.PERMUTATION_RESAMPLES + 1))
    assert row["p_value"] >= row["min_p"]
    assert inf.permutation(a, b, paired=paired)["p_value"] == row["p_value"]
    # close to scipy's exact-free answers: the t-test agrees within Monte-Carlo noise and model error
    ref = (stats.ttest_rel(a, b) if paired else stats.ttest_ind(a, b)).pvalue
    assert row["p_value"] == pytest.approx(ref, abs=0.05)
    # far apart: the floor, not 0
    far = inf.permutation(a + 10, b, paired=paired)
    assert far["p_value"] == pytest.approx(far["min_p"])


def test_permutation_below_the_threshold_stays_exact():
    rng = np.random.default_rng(13)
    a, b = rng.normal(0.5, 1, 9), rng.normal(0, 1, 9)  # C(18, 9) = 48620 splits
    assert math.comb(18, 9) <= inf.PERMUTATION_EXACT_MAX and 2**16 <= inf.PERMUTATION_EXACT_MAX
    row = inf.permutation(a, b)
    assert row["note"].startswith("exact") and row["min_p"] == 2 / math.comb(18, 9)
    assert inf.permutation(a[:5], b[:5], paired=True)["note"].startswith("exact")


def test_p_better_estimate_is_mann_whitney_u_over_nm_and_paired_wins():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0])
    # by hand: 3 vs 2 wins twice, 2 vs 2 ties twice (half each), 1 loses: (2 + 1) / 6
    assert inf.p_better(a, b)["estimate"] == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.integers(0, 6, rng.integers(2, 9)), rng.integers(0, 6, rng.integers(2, 9))  # ties
        u = stats.mannwhitneyu(a, b).statistic
        assert inf.p_better(a.astype(float), b.astype(float))["estimate"] == pytest.approx(u / (len(a) * len(b)))
        low = inf.p_better(a.astype(float), b.astype(float), higher_is_better=False)
        assert low["estimate"] == pytest.approx(stats.mannwhitneyu(b, a).statistic / (len(a) * len(b)))
    # paired (Bouthillier et al.): the share of seed pairs won, ties half
    assert inf.p_better([3.0, 1.0, 2.0, 5.0], [2.0, 2.0, 2.0, 1.0], paired=True)["estimate"] == pytest.approx(2.5 / 4)


def test_p_better_counts_float_residue_as_a_tie():
    """A 1e-14 difference is float residue (welch's estimate is 0.0): a tie, half a win."""
    base, cand = np.array([1.0, 2.0]), np.array([1.0, 2.0]) + 1e-14
    assert inf.welch(cand, base)["estimate"] == 0.0
    # (1+e vs 1) tie, (1+e vs 2) loss, (2+e vs 1) win, (2+e vs 2) tie: (0.5 + 0 + 1 + 0.5) / 4
    assert inf.p_better(cand, base)["estimate"] == 0.5
    assert inf.p_better(cand, base, paired=True)["estimate"] == 0.5
    assert inf.p_better(cand, base, higher_is_better=False)["estimate"] == 0.5


def test_p_better_normal_part_is_the_noncentral_t_interval():
    """By hand: pooled t, its noncentrality interval from scipy's nct, d = nc sqrt(1/n + 1/m),
    P = Phi(d / sqrt 2); the normal part's p-value is the pooled t-test's."""
    a, b = np.array([71.2, 72.0, 71.7]), np.array([70.9, 71.1, 71.6])
    row = inf.p_better(a, b)
    t = stats.ttest_ind(a, b, equal_var=True)
    k = math.sqrt(1 / 3 + 1 / 3)
    for end, q in (("normal_low", 0.975), ("normal_high", 0.025)):
        nc = stats.norm.ppf(row[end]) * math.sqrt(2) / k  # invert: the noncentrality at that end
        assert stats.nct.cdf(t.statistic, 4, nc) == pytest.approx(q, abs=1e-6)
    assert row["normal_p"] == pytest.approx(t.pvalue)
    assert row["normal_low"] < row["p_normal"] < row["normal_high"]
    # far in the tails (scipy's nct.cdf gives NaN there; mirrored): still finite and ordered
    wide = inf.p_better(np.array([90.0, 90.1]), np.array([10.0, 10.2]))
    assert 0.5 < wide["normal_low"] <= wide["normal_high"] <= 1.0 and wide["normal_p"] < 0.01
    # ... but 2 runs per arm rank the same however far apart: the rank parts keep 0.5 inside
    assert wide["ci_low"] < 0.5 and wide["p_value"] >= 0.05 and wide["estimate"] == 1.0


def test_tost_is_statsmodels():
    from statsmodels.stats.weightstats import ttost_ind, ttost_paired

    rng = np.random.default_rng(3)
    a, b = rng.normal(0.1, 0.5, 5), rng.normal(0, 0.4, 6)
    row = inf.tost(a, b, 1.0)
    assert row["p_value"] == pytest.approx(ttost_ind(a, b, -1.0, 1.0, usevar="unequal")[0])
    b = rng.normal(0, 0.4, 5)
    row = inf.tost(a, b, 0.8, paired=True)
    assert row["p_value"] == pytest.approx(ttost_paired(a, b, -0.8, 0.8)[0])
    # its interval is the 90 % one; non-inferiority keeps only the lower test (higher is better)
    w = inf.welch(a, b, alpha=0.1)
    assert (row["ci_low"], row["ci_high"]) != (w["ci_low"], w["ci_high"])  # paired != unpaired
    ni = inf.tost(a, b, 0.8, kind="non_inferiority")
    assert ni["p_value"] == pytest.approx(ttost_ind(a, b, -0.8, 1e9, usevar="unequal")[1][1])
    with pytest.raises(inf.VerdictError, match="margin must be > 0"):
        inf.tost(a, b, -0.5)


def test_flip_counts_by_hand():
    # correctness of 2 candidate and 2 baseline runs on 4 examples
    cand = 100.0 * np.array([[1, 1, 0, 1], [1, 0, 0, 1]])
    base = 100.0 * np.array([[0, 1, 1, 1], [0, 0, 1, 0]])
    rows = {r["test"]: r for r in inf.flips(cand, base)}
    # fixes (base wrong, cand right) per (cand, base) pair: (0,0): ex0 -> 1; (0,1): ex0, ex1, ex3 -> 3;
    # (1,0): ex0 -> 1; (1,1): ex0, ex3 -> 2; mean 7/4. Regressions: (0,0): ex2 -> 1; (0,1): ex2 -> 1;
    # (1,0): ex1, ex2 -> 2; (1,1): ex2 -> 1; mean 5/4. Net = 4 * (acc_c - acc_b) / 100 = 0.5
    assert rows["fixes"]["estimate"] == pytest.approx(7 / 4)
    assert rows["regressions"]["estimate"] == pytest.approx(5 / 4)
    assert rows["fixes"]["ci_low"] < 7 / 4 < rows["fixes"]["ci_high"]
    paired = {r["test"]: r for r in inf.flips(cand, base, pairs=[(0, 0), (1, 1)])}
    assert paired["fixes"]["estimate"] == pytest.approx(1.5) and paired["regressions"]["estimate"] == 1.0


def test_flip_count_intervals_stop_at_zero():
    # fixes: 0 for one pair of runs, 2 for the other: the t interval of 1 +- 12.7 would reach -11.7
    cand = 100.0 * np.array([[0, 0, 1, 1], [1, 1, 1, 1]])
    base = 100.0 * np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    rows = {r["test"]: r for r in inf.flips(cand, base, pairs=[(0, 0), (1, 1)])}
    assert rows["fixes"]["estimate"] == 1.0 and rows["fixes"]["ci_low"] == 0.0 and rows["fixes"]["ci_high"] > 1
    for r in inf.flips(cand, base) + list(rows.values()):
        assert r["ci_low"] >= 0


def test_noether_sizes_of_bouthillier_et_al():
    assert plan_mod.noether_runs(0.75, alpha=0.05, power=0.95) == 29
    assert plan_mod.noether_runs(0.55, alpha=0.05, power=0.95) == 722
    with pytest.raises(inf.VerdictError, match="gamma"):
        plan_mod.noether_runs(0.5)


def test_replicas_needed_is_the_smallest_n_and_never_hangs():
    n = plan_mod.replicas_needed(1.0, 1.0, alpha=0.05, power=0.8)
    assert n == 17  # the textbook value for d = 1
    assert plan_mod.power_two_sample(n, 1.0, 1.0, 0.05) >= 0.8 > plan_mod.power_two_sample(n - 1, 1.0, 1.0, 0.05)
    t0 = time.process_time()
    assert plan_mod.replicas_needed(1e-5, 1.0) == -1  # more than max_n: looped for > 10 min before
    assert plan_mod.replicas_needed(1.4e-14, 0.45) == -1 and plan_mod.replicas_needed(0.0, 1.0) == -1
    assert time.process_time() - t0 < 5  # a guard against a hang, not a speed target


# --- degenerate inputs: each a labelled answer, no crash, no hang -------------------------------


def arms(b, a, n=1):
    """Run-level values as per-example values of one example each (means = the values)."""
    return {"accuracy": np.array(b, float)[:, None].repeat(n, 1)}, {
        "accuracy": np.array(a, float)[:, None].repeat(n, 1)
    }


def test_float_residue_difference_is_no_difference():
    # equal run sums: the means differ by a float residue (1.4e-14): it raised TypeError before
    base, cand = arms([72.5, 71.6], [72.2, 71.9])
    rows = rows_by_test(inf.compare(base, cand))
    assert rows["welch"]["estimate"] == 0.0 and rows["welch"]["p_value"] == pytest.approx(1.0)
    plan = plan_mod.plan(base["accuracy"], cand["accuracy"])
    assert plan[0]["effect_is"] == "observed (post hoc)" and plan[0]["replicas_needed"] == -1
    v = ver.verdict(inf.compare(base, cand))[0]
    assert v["decision"] == "not significant" and "1 time in 6" in v["small_sample"]


def test_identical_arms_and_zero_sd():
    base, cand = arms([70.0, 70.0, 70.0], [70.0, 70.0, 70.0], n=3)
    v = ver.verdict(inf.compare(base, cand))[0]
    assert v["decision"] == "identical arms" and v["difference"] == 0 and v["p_better"] == 0.5
    base, cand = arms([70.0, 70.0], [71.0, 71.0], n=3)  # every run identical within each arm
    rows = rows_by_test(inf.compare(base, cand))
    assert rows["welch"]["estimate"] == 1.0 and math.isnan(rows["welch"]["p_value"])
    assert "no run-to-run variation" in rows["welch"]["note"] and not rows["welch"]["calibrated"]
    v = ver.verdict(inf.compare(base, cand))[0]
    assert v["decision"] == "exact difference (no run-to-run noise)"
    assert (v["p_better_low"], v["p_better_high"]) == (1.0, 1.0)
    lines = ver.verdict_lines("x", [v])
    assert not any("nan" in line for line in lines), lines
    assert "no run-to-run variation: every run of an arm scores the same; no interval" in lines[0]


def test_two_runs_per_arm_withholds_the_joint_test_and_says_so():
    rng = np.random.default_rng(4)
    rows = rows_by_test(inf.compare(*simulate(rng, 2, 200)))
    joint = rows["joint_paired"]
    assert math.isnan(joint["p_value"]) and math.isnan(joint["ci_low"]) and "withheld" in joint["note"]
    assert np.isfinite(rows["welch"]["p_value"]) and np.isfinite(rows["p_better"]["ci_low"])
    lines = ver.verdict_lines("x", ver.verdict(inf.compare(*simulate(rng, 2, 200))))
    assert any("smallest two-sided p: 0.333" in line for line in lines)
    assert not any("nan" in line for line in lines), lines
    assert any("data distribution" in line and "withheld at 2 runs per arm" in line for line in lines)


# --- bad input ------------------------------------------------------------------------------------


def test_bad_arms_are_refused_with_a_message():
    rng = np.random.default_rng(5)
    base, cand = simulate(rng, 3, 100)
    with pytest.raises(inf.VerdictError, match="1 run"):
        inf.compare({k: v[:1] for k, v in base.items()}, cand)
    with pytest.raises(inf.VerdictError, match="not the same test set"):
        inf.compare(base, {k: v[:, :50] for k, v in cand.items()})
    with pytest.raises(inf.VerdictError, match="gamma"):
        ver.verdict(inf.compare(base, cand), gamma=1.2)


def test_holm_by_hand_and_against_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.5]
    # sorted 0.01, 0.03, 0.04, 0.5 times 4, 3, 2, 1 = 0.04, 0.09, 0.08 -> 0.09 (monotone), 0.5
    np.testing.assert_allclose(inf.holm(p), [0.04, 0.09, 0.09, 0.5])
    np.testing.assert_allclose(inf.holm(p), multipletests(p, method="holm")[1])


def test_moment_variance_is_unbiased_in_a_two_way_random_effects_model():
    """Runs, examples and their interaction all random: the average of moment_variance over 2000
    data sets equals the variance of the estimate across them (relative SE of both ~3 %)."""
    rng = np.random.default_rng(11)
    est, var_hat = [], []
    for _ in range(2000):
        ex = rng.normal(0, 1.0, 40)  # shared example difficulty (cancels in the paired difference)
        a = rng.normal(0, 0.5, (5, 1)) + ex + rng.normal(0, 0.7, 40) + rng.normal(0, 2.0, (5, 40))
        b = rng.normal(0, 0.5, (4, 1)) + ex + rng.normal(0, 0.7, 40) + rng.normal(0, 2.0, (4, 40))
        est.append(a.mean() - b.mean())
        var_hat.append(inf.moment_variance(a, b))
    assert np.mean(var_hat) == pytest.approx(np.var(est), rel=0.1)


def test_compare_rows_verdict_and_all_pairs():
    rng = np.random.default_rng(8)
    base, cand = simulate(rng, 5, 300)
    rows = inf.compare(base, cand, pairs=[(i, i) for i in range(5)], margin={"accuracy": 2.0})
    tests = {r["test"] for r in rows}
    assert tests == {
        "welch",
        "permutation",
        "paired_runs",
        "joint_paired",
        "joint_unpaired",
        "p_better",
        "tost",
        "fixes",
        "regressions",
    }
    for test in tests:
        sub = [r for r in rows if r["test"] == test]
        np.testing.assert_allclose([r["p_holm"] for r in sub], inf.holm([r["p_value"] for r in sub]))
        assert all(r["question"] for r in sub)
    acc = rows_by_test(rows)
    assert acc["welch"]["estimate"] == pytest.approx(cand["accuracy"].mean() - base["accuracy"].mean())
    # fixes - regressions = n * (accuracy difference) / 100, per seed pair
    assert acc["fixes"]["estimate"] - acc["regressions"]["estimate"] == pytest.approx(
        3 * acc["paired_runs"]["estimate"]
    )
    v = {x["metric"]: x for x in ver.verdict(rows, held_fixed="only init varies")}
    assert v["accuracy"]["diff_test"] == "paired_runs" and "TOST" in v["accuracy"]["equivalence"]
    assert v["accuracy"]["decision"].split(" (")[0] in ver.DECISIONS and v["accuracy"]["held_fixed"]
    pairs = inf.all_pairs({"x": base, "y": cand, "z": base})
    assert len(pairs) == 3 * 2 * 3  # pairs x metrics x tests


def test_plan_for_a_named_effect_and_the_distribution_question():
    rng = np.random.default_rng(9)
    base, cand = simulate(rng, 4, 1000, run_sd=0.0)  # flips only: no shared part
    rows = {r["basis"]: r for r in plan_mod.plan(base["accuracy"], cand["accuracy"], effect=1.0)}
    pilot, test_set = rows["pilot_sd"], rows["indep_only"]
    assert pilot["effect_is"] == "named (config effect)"
    assert pilot["sd_low"] < pilot["sd"] < pilot["sd_high"]
    assert pilot["replicas_low"] <= pilot["replicas_needed"] <= pilot["replicas_high"]
    assert pilot["sd_low"] <= test_set["sd"] <= pilot["sd_high"]
    assert pilot["replicas_needed"] == plan_mod.replicas_needed(1.0, pilot["sd"])
    assert rows["p_better"]["replicas_needed"] == plan_mod.noether_runs(0.75, 0.05, 0.8)
    # a new test set of 1000 examples: its own sampling noise (~1.3 points) caps what runs can show
    far = {r["basis"]: r for r in plan_mod.plan(base["accuracy"], cand["accuracy"], effect=0.5)}["distribution"]
    assert far["replicas_needed"] == -1 and "larger test set" in far["note"]
    with pytest.raises(inf.VerdictError, match="2 pilot runs per arm"):
        plan_mod.plan(base["accuracy"][:1], cand["accuracy"][:2], 1.0)


def test_plan_distribution_row_is_capped():
    """A tiny observed effect over run noise: the normal approximation asked for ~7.8e10 runs."""
    base = np.array([[70.0, 70.0], [71.0, 71.0]])
    cand = base + 1e-5
    rows = {r["basis"]: r for r in plan_mod.plan(base, cand)}
    dist = rows["distribution"]
    assert dist["replicas_needed"] == -1 and "cannot be reached" in dist["note"]
    assert all(r["replicas_needed"] <= plan_mod.MAX_REPLICAS for r in rows.values())
