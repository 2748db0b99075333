"""Statistics for "is my improvement real?" on synthetic data with known answers."""

import numpy as np
import pytest
from scipy import stats

from nondet.compare import (
    anova_components,
    compare_arms,
    power_two_sample,
    replicas_needed,
    variance_components,
)


def test_identical_distributions_cover_zero_and_give_uniform_p_values():
    rng = np.random.default_rng(0)
    trials = [compare_arms(rng.normal(90, 0.5, 8), rng.normal(90, 0.5, 8), n_resamples=400,
                           seed=i) for i in range(300)]  # fmt: skip
    covered = np.mean([t["ci_low"] <= 0 <= t["ci_high"] for t in trials])
    assert 0.88 <= covered <= 0.99  # nominal 95 % (percentile bootstrap is a bit narrow at n=8)
    for key in ("welch_p", "permutation_p"):
        p = np.array([t[key] for t in trials])
        assert stats.kstest(p, "uniform").pvalue > 0.001, key
        assert 0.02 <= np.mean(p < 0.05) <= 0.10, key


def test_planted_shift_is_detected():
    rng = np.random.default_rng(1)
    sd, k = 0.5, 2.0
    res = [compare_arms(rng.normal(90, sd, 10), rng.normal(90 + k * sd, sd, 10), n_resamples=400,
                        seed=i) for i in range(100)]  # fmt: skip
    assert np.mean([r["welch_p"] < 0.05 for r in res]) > 0.9
    assert np.mean([r["permutation_p"] < 0.05 for r in res]) > 0.9
    assert np.median([r["effect_in_sd"] for r in res]) == pytest.approx(k, rel=0.2)
    assert np.mean([r["ci_low"] > 0 for r in res]) > 0.9


def test_replicas_needed_matches_simulation():
    n = replicas_needed(1.0, 1.0, alpha=0.05, power=0.8)
    assert n == 17  # the textbook value for d = 1
    rng = np.random.default_rng(2)

    def simulated_power(n, trials=4000):
        a = rng.normal(0, 1, (trials, n))
        b = rng.normal(1, 1, (trials, n))
        return np.mean(stats.ttest_ind(a, b, axis=1, equal_var=False).pvalue < 0.05)

    assert simulated_power(n) == pytest.approx(0.8, abs=0.03)
    assert simulated_power(n) >= simulated_power(max(2, n - 6))
    assert power_two_sample(n, 1.0, 1.0, 0.05) >= 0.8 > power_two_sample(n - 1, 1.0, 1.0, 0.05)
    assert replicas_needed(0.0, 1.0) == -1


@pytest.mark.parametrize("planted", [(4.0, 1.0, 0.0, 0.5), (0.0, 2.0, 1.0, 0.25)])
def test_variance_components_recover_planted_two_factor(planted):
    va, vb, vab, ve = planted
    rng = np.random.default_rng(3)
    estimates = []
    for _ in range(40):
        a, b = 12, 12
        y = (rng.normal(0, np.sqrt(va), (a, 1)) + rng.normal(0, np.sqrt(vb), (1, b))
             + rng.normal(0, np.sqrt(vab + ve), (a, b)))  # fmt: skip
        est = anova_components(y, ["init", "shuffle"])
        estimates.append([est["init"]["component"], est["shuffle"]["component"],
                          est["residual"]["component"]])  # fmt: skip
    mean = np.mean(estimates, axis=0)
    assert mean == pytest.approx([va, vb, vab + ve], abs=0.35 * max(va, vb, 1.0))


def test_variance_components_three_factors_with_interaction():
    rng = np.random.default_rng(4)
    sources = ["init", "shuffle", "augment"]
    planted = {"init": 1.0, "shuffle": 0.5, "augment": 0.0, "initxshuffle": 0.8}
    est = []
    for _ in range(30):
        n = 8
        y = (rng.normal(0, 1.0, (n, 1, 1)) + rng.normal(0, np.sqrt(0.5), (1, n, 1))
             + rng.normal(0, np.sqrt(0.8), (n, n, 1)) + rng.normal(0, 0.3, (n, n, n)))  # fmt: skip
        est.append({k: v["component"] for k, v in anova_components(y, sources).items()})
    for name, value in planted.items():
        got = np.mean([e[name] for e in est])
        assert got == pytest.approx(value, abs=0.2), name
    assert np.mean([e["residual"] for e in est]) == pytest.approx(0.09, abs=0.03)
    rows = variance_components(y, sources, n_resamples=50)
    by = {r["effect"]: r for r in rows}
    assert by["initxshuffle"]["p_value"] < 1e-6 and by["shufflexaugment"]["p_value"] > 1e-4
    assert all(r["component_se"] >= 0 for r in rows)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
