"""k-model ensembles of a condition's replicas (nondet.analysis.ensembles) and their table."""

import numpy as np
import pytest

from nondet.analysis.ensembles import ensemble_row, ensemble_sizes, make_ensembles
from nondet.analysis.metrics import accuracy, disagreement_matrix, mean_over_pairs


def test_sizes_keep_at_least_two_disjoint_groups():
    assert ensemble_sizes(8) == [1, 2, 4]
    assert ensemble_sizes(9) == [1, 2, 4]
    assert ensemble_sizes(7) == [1, 2]
    assert ensemble_sizes(2) == [1]
    assert ensemble_sizes(1) == []


def test_ensembles_average_disjoint_groups_of_consecutive_replicas():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 30, 4)).astype(np.float32)
    ens = make_ensembles(logits, 2)
    assert ens.shape == (2, 30, 4)  # replica 4 is left out
    np.testing.assert_allclose(ens[1], (logits[2] + logits[3]) / 2, rtol=1e-6)
    np.testing.assert_array_equal(make_ensembles(logits, 1), logits)


def test_row_of_k1_is_the_single_models_variability():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 50)
    logits = rng.normal(size=(6, 50, 4)).astype(np.float32)
    row = ensemble_row(make_ensembles(logits, 1), labels)
    acc = accuracy(logits, labels)
    assert row["n_ensembles"] == 6
    assert row["acc_sd"] == pytest.approx(np.std(acc, ddof=1))
    assert row["disagreement"] == pytest.approx(mean_over_pairs(disagreement_matrix(logits)))
    # averaging more models makes the ensembles agree more (independent noise around one signal)
    signal = rng.normal(size=(1, 50, 4)) * 2
    noisy = (signal + rng.normal(size=(16, 50, 4))).astype(np.float32)
    d = [ensemble_row(make_ensembles(noisy, k), labels)["disagreement"] for k in (1, 2, 4, 8)]
    assert d == sorted(d, reverse=True) and d[-1] < d[0]
