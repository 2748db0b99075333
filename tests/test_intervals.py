"""Intervals beside the tables: the diversity table's SD and the factorial residual, where the
bootstrap SE is too small at a few replicas (SD +- SE covered ~81 %, the residual's ~77 %)."""

import numpy as np

from nondet.analysis.metrics import sd_interval
from nondet.analysis.variance import variance_components


def test_sd_interval_covers_at_a_few_replicas():
    """2000 groups of 4 normal replicas (SE of a 95 % coverage: 0.5 points)."""
    rng = np.random.default_rng(1)
    cover = []
    for _ in range(2000):
        lo, hi = sd_interval(rng.normal(70, 0.4, 4))
        cover.append(lo <= 0.4 <= hi)
    assert 0.93 <= np.mean(cover) <= 0.97
    assert all(np.isnan(sd_interval([1.0])))


def test_factorial_residual_interval_covers():
    """A 3 x 3 design with a residual variance of 0.25: the chi-square interval covers ~95 %
    (400 designs, SE 1.1 points), the row's bootstrap SE stays beside it."""
    rng = np.random.default_rng(2)
    cover = []
    for _ in range(400):
        y = rng.normal(0, 0.6, (3, 1)) + rng.normal(0, 0.3, (1, 3)) + rng.normal(0, 0.5, (3, 3))
        res = next(r for r in variance_components(y, ["init", "order"], 0, 0) if r["effect"] == "residual")
        cover.append(res["component_low"] <= 0.25 <= res["component_high"])
        other = next(r for r in variance_components(y, ["init", "order"], 0, 0) if r["effect"] == "init")
        assert np.isnan(other["component_low"])
    assert 0.92 <= np.mean(cover) <= 0.98
