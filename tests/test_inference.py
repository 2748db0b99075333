"""Example-level inference (nondet.inference): references from scipy/statsmodels and hand-computed
cases, and simulations with fixed seeds (planted effects, calibration under no effect)."""

import itertools

import numpy as np
import pytest
from scipy import special, stats

from nondet.inference import (
    all_pairs,
    compare_per_example,
    holm,
    joint_bootstrap,
    moment_variance,
    paired_runs,
    plan_replicas,
    prob_better,
)


def test_p_better_is_mann_whitney_u_over_nm():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0])
    # by hand: 3 vs 2 wins twice, 2 vs 2 ties twice (half each), 1 loses: (2 + 1) / 6
    assert prob_better(a, b, n_resamples=200)["estimate"] == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.integers(0, 6, rng.integers(2, 9)), rng.integers(0, 6, rng.integers(2, 9))  # ties
        u = stats.mannwhitneyu(a, b).statistic
        res = prob_better(a.astype(float), b.astype(float), n_resamples=200)
        assert res["estimate"] == pytest.approx(u / (len(a) * len(b)))
        assert res["p_value"] == pytest.approx(stats.mannwhitneyu(a, b).pvalue)
        # lower is better (cross-entropy): P(a < b) + ties / 2 = 1 - P(a > b) - ties / 2 ... = U(b, a) / nm
        low = prob_better(a.astype(float), b.astype(float), higher_is_better=False, n_resamples=200)
        assert low["estimate"] == pytest.approx(stats.mannwhitneyu(b, a).statistic / (len(a) * len(b)))


def test_p_better_interval_has_the_width_and_limits_the_statistic_allows():
    # every candidate run beats every baseline run: P = 1 in every resample, so the interval is [1, 1]
    res = prob_better(np.array([5.0, 6.0, 7.0]), np.array([1.0, 2.0]), n_resamples=500)
    assert (res["estimate"], res["ci_low"], res["ci_high"]) == (1.0, 1.0, 1.0)
    # 40 runs per arm, true P(A > B) = Phi(1 / sqrt 2) = 0.76: the normal-theory SE of the AUC is
    # about 0.05, so a 95 % interval is about 0.2 wide and excludes 0.5
    rng = np.random.default_rng(1)
    res = prob_better(rng.normal(1, 1, 40), rng.normal(0, 1, 40), n_resamples=2000)
    assert 0.12 < res["ci_high"] - res["ci_low"] < 0.3
    assert 0.5 < res["ci_low"] and res["ci_high"] <= 1.0


def test_holm_by_hand_and_against_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.5]
    # sorted 0.01, 0.03, 0.04, 0.5 times 4, 3, 2, 1 = 0.04, 0.09, 0.08 -> 0.09 (monotone), 0.5
    np.testing.assert_allclose(holm(p), [0.04, 0.09, 0.09, 0.5])
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1])
    out = holm([0.02, np.nan, 0.01])
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)


def exact_joint_moments(a, b, paired_examples, paired_runs_=False):
    """Mean and variance of the joint bootstrap statistic by enumerating every resample."""
    (ra, n), rb = a.shape, len(b)

    def draws(k):
        for idx in itertools.product(range(k), repeat=k):
            yield np.bincount(idx, minlength=k), 1.0 / k**k

    values, weights = [], []
    run_draws = (
        [((c, c), w) for c, w in draws(ra)]
        if paired_runs_
        else [((ca, cb), wa * wb) for (ca, wa), (cb, wb) in itertools.product(list(draws(ra)), list(draws(rb)))]
    )
    ex = list(draws(n))
    ex_draws = (
        [((e, e), w) for e, w in ex]
        if paired_examples
        else [((ea, eb), wa * wb) for (ea, wa), (eb, wb) in itertools.product(ex, ex)]
    )
    for ((ca, cb), wr), ((ea, eb), we) in itertools.product(run_draws, ex_draws):
        values.append(ca @ a @ ea / (ra * n) - cb @ b @ eb / (rb * n))
        weights.append(wr * we)
    values, weights = np.array(values), np.array(weights)
    mean = np.sum(weights * values)
    return mean, np.sum(weights * (values - mean) ** 2)


@pytest.mark.parametrize("paired_examples, paired", [(True, False), (False, False), (True, True)])
def test_joint_bootstrap_matches_exhaustive_enumeration(paired_examples, paired):
    a = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    b = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    mean, var = exact_joint_moments(a, b, paired_examples, paired)
    B = 40_000
    res = joint_bootstrap(a, b, B, seed=1, paired_examples=paired_examples, paired_runs=paired, correct=False)
    d = res["distribution"]
    assert res["estimate"] == pytest.approx(a.mean() - b.mean())
    assert abs(d.mean() - mean) < 4 * np.sqrt(var / B)  # Monte Carlo error of the mean
    assert d.var() == pytest.approx(var, rel=0.04)  # 40k draws: relative SE of a variance ~1 %


def test_joint_bootstrap_with_one_run_per_arm_is_scipys_paired_bootstrap():
    rng = np.random.default_rng(2)
    a, b = rng.random((1, 300)) < 0.8, rng.random((1, 300)) < 0.7
    res = joint_bootstrap(100.0 * a, 100.0 * b, 20_000, seed=3, correct=False)
    ref = stats.bootstrap((100.0 * a[0], 100.0 * b[0]), lambda x, y, axis=-1: np.mean(x - y, axis=axis),
                          paired=True, n_resamples=20_000, method="percentile", rng=np.random.default_rng(4))  # fmt: skip
    assert res["se"] == pytest.approx(ref.standard_error, rel=0.03)
    assert res["ci_low"] == pytest.approx(ref.confidence_interval.low, abs=0.6)
    assert res["ci_high"] == pytest.approx(ref.confidence_interval.high, abs=0.6)
    same = joint_bootstrap(100.0 * a, 100.0 * a, 100, seed=0)
    assert same["estimate"] == 0 and same["p_value"] == 1.0


def simulate(rng, runs, n, delta=0.0, tau=1.0, run_sd=0.05, shared_seeds=False):
    """Per-example correctness (%) of two arms on n fresh test examples: example difficulty u_i
    shared by both arms, a per-example arm difference +-w_i (symmetric: no difference over the
    data distribution when delta = 0), a run effect per seed, Bernoulli flips per (run, example)."""
    u, w = rng.normal(1.5, 2.0, n), rng.normal(0, tau, n)
    sa = rng.normal(0, run_sd, (runs, 1))
    sb = sa if shared_seeds else rng.normal(0, run_sd, (runs, 1))
    pa, pb = special.expit(u - w + delta + sa), special.expit(u + w + sb)
    return 100.0 * (rng.random((runs, n)) < pa), 100.0 * (rng.random((runs, n)) < pb)


def calibration(trials):
    covered = np.mean([t["ci_low"] <= 0 <= t["ci_high"] for t in trials])
    return covered, np.array([t["p_value"] for t in trials])


@pytest.mark.parametrize("tau", [1.0, 0.0])
def test_joint_bootstrap_calibration_under_no_effect(tau):
    """No difference on the data distribution (true difference 0): arms that differ per example
    (tau = 1, symmetric) or not at all (tau = 0); 8 runs x 200 fresh examples, 300 trials.

    Corrected (default): near nominal. 300 trials give a 95 % coverage an SE of 1.3 points and a
    5 % rejection rate one of 1.3 points: the bounds are about 3 SE from nominal (measured:
    tau 1: 93.0 % coverage, 6.7 % rejections; tau 0: 94.7 %, 5.3 %). Raw two-way bootstrap
    (correct=False): it counts the per-(run, example) flips twice, so it is conservative (measured
    97.3 % / 2.3 % and 100 % / 0 %); it must never be anti-conservative."""
    rng = np.random.default_rng(5)
    data = [simulate(rng, 8, 200, tau=tau) for _ in range(300)]
    covered, p = calibration([joint_bootstrap(a, b, 1000, seed=i) for i, (a, b) in enumerate(data)])
    assert 0.91 <= covered <= 0.99
    assert stats.kstest(p, "uniform").pvalue > 0.001
    assert 0.015 <= np.mean(p < 0.05) <= 0.09
    covered, p = calibration([joint_bootstrap(a, b, 1000, seed=i, correct=False) for i, (a, b) in enumerate(data)])
    assert covered >= 0.95
    for q in (0.01, 0.05, 0.1, 0.25):  # P(p < q) <= q: uniform or conservative
        assert np.mean(p < q) <= q + 3 * np.sqrt(q * (1 - q) / len(p)), q


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
        var_hat.append(moment_variance(a, b))
    assert np.mean(var_hat) == pytest.approx(np.var(est), rel=0.1)


def test_pairing_by_example_finds_a_planted_effect_with_fewer_runs():
    """The same planted effect, tested on the data distribution with examples resampled jointly
    (paired) or independently per arm (unpaired). 100 trials per point: power SE <= 0.05."""
    rng = np.random.default_rng(6)
    power = {}
    for runs in (2, 4, 8):
        hits = {True: 0, False: 0}
        for i in range(100):
            a, b = simulate(rng, runs, 400, delta=0.35, tau=0.3)
            for paired in (True, False):
                hits[paired] += joint_bootstrap(a, b, 300, seed=i, paired_examples=paired)["p_value"] < 0.05
        power[runs] = (hits[True] / 100, hits[False] / 100)
    # measured: paired 72/86/96 %, unpaired 48/41/57 % with 2/4/8 runs per arm
    assert power[4][0] >= 0.75  # paired: 80 % power with 4 runs per arm
    assert all(unpaired < 0.7 for _, unpaired in power.values())  # unpaired: not even with 8
    assert all(paired > unpaired for paired, unpaired in power.values())


def test_pairing_by_seed_finds_a_planted_effect_with_fewer_runs():
    """Arms sharing seeds share their run effect: the paired t-test removes it, Welch cannot.
    200 trials per point: power SE <= 0.035."""
    rng = np.random.default_rng(7)
    power = {}
    for runs in (3, 6, 12):
        hits = np.zeros(2)
        for _ in range(200):
            a, b = simulate(rng, runs, 400, delta=0.3, tau=0.3, run_sd=0.8, shared_seeds=True)
            ra, rb = a.mean(1), b.mean(1)
            hits += [paired_runs(ra, rb, 50)["p_value"] < 0.05, stats.ttest_ind(ra, rb, equal_var=False).pvalue < 0.05]
        power[runs] = hits / 200
    assert power[6][0] >= 0.7 and power[12][1] < power[6][0]
    assert all(p > w for p, w in power.values())


def test_compare_per_example_rows_and_holm_family():
    rng = np.random.default_rng(8)
    a, b = simulate(rng, 5, 300, delta=0.5, tau=0.3)
    ce = {"accuracy": b, "cross_entropy": -b / 100}, {"accuracy": a, "cross_entropy": -a / 100}
    rows = compare_per_example(*ce, n_resamples=500, pairs=[(i, i) for i in range(5)])
    tests = {r["test"] for r in rows}
    assert tests == {"welch", "permutation", "paired_runs", "joint_paired", "joint_unpaired", "p_better"}
    for test in tests:
        sub = [r for r in rows if r["test"] == test]
        np.testing.assert_allclose([r["p_holm"] for r in sub], holm([r["p_value"] for r in sub]))
        assert all(r["question"] for r in sub)
    acc = {r["test"]: r for r in rows if r["metric"] == "accuracy"}
    assert acc["welch"]["estimate"] == pytest.approx(a.mean() - b.mean())
    pairs = all_pairs({"x": ce[0], "y": ce[1], "z": ce[0]}, n_resamples=200)
    assert len(pairs) == 3 * 2 * 3  # pairs x metrics x tests
    welch = [r["p_value"] for r in pairs if r["test"] == "welch"]
    np.testing.assert_allclose([r["p_holm"] for r in pairs if r["test"] == "welch"], holm(welch))


def test_plan_replicas_from_pilots():
    rng = np.random.default_rng(9)
    a, b = simulate(rng, 4, 1000, delta=0.2, tau=0.0, run_sd=0.0)  # flips only: no shared part
    rows = {r["basis"]: r for r in plan_replicas(b, a, effect=1.0)}
    pilot, test_set = rows["pilot_sd"], rows["indep_only"]
    assert pilot["sd_low"] < pilot["sd"] < pilot["sd_high"]
    assert pilot["replicas_low"] <= pilot["replicas_needed"] <= pilot["replicas_high"]
    assert test_set["sd_low"] <= test_set["sd"] <= test_set["sd_high"]
    # with flips only, the pilot SD's interval holds the SD the test set alone predicts
    assert pilot["sd_low"] <= test_set["sd"] <= pilot["sd_high"]
    from nondet.compare import replicas_needed

    assert pilot["replicas_needed"] == replicas_needed(1.0, pilot["sd"])
    assert "lower bound" in pilot["assumptions"]
    with pytest.raises(ValueError, match="at least 3 pilot runs"):
        plan_replicas(b[:1], a[:1], 1.0)
