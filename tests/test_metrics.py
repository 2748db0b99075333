import numpy as np
import pytest
from scipy import stats

from nondet.analysis import metrics as M


def onehot_logits(preds, k=3, scale=5.0):
    preds = np.asarray(preds)
    out = np.zeros(preds.shape + (k,), dtype=np.float32)
    np.put_along_axis(out, preds[..., None], scale, axis=-1)
    return out


def test_accuracy_and_cross_entropy_by_hand():
    logits = np.array([[[0.0, 0.0], [np.log(3.0), 0.0]]])  # p(class0) = 0.5, 0.75
    labels = np.array([0, 1])
    assert M.accuracy(logits, labels)[0] == pytest.approx(50.0)  # ties break to class 0
    assert M.cross_entropy(logits, labels)[0] == pytest.approx(-(np.log(0.5) + np.log(0.25)) / 2)


def test_disagreement_by_hand():
    logits = onehot_logits([[0, 1, 2, 0], [0, 1, 2, 1], [1, 2, 0, 1]])
    d = M.disagreement_matrix(logits)
    assert d[0, 1] == pytest.approx(25.0)
    assert d[0, 2] == pytest.approx(100.0)
    assert d[1, 2] == pytest.approx(75.0)
    assert np.allclose(np.diag(d), 0) and np.allclose(d, d.T)


def test_correlations_match_scipy():
    x = np.random.default_rng(0).normal(size=(3, 20, 4))
    x[1] = x[0] + 0.5 * x[1]
    pearson, spearman = M.correlation_matrices(x)
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        assert pearson[i, j] == pytest.approx(stats.pearsonr(x[i].ravel(), x[j].ravel())[0])
        assert spearman[i, j] == pytest.approx(stats.spearmanr(x[i].ravel(), x[j].ravel())[0])
    assert pearson[0, 1] > 0.8


def test_ensemble_gain_by_hand():
    # model A: right on ex 0,1, confidently wrong on 2,3; model B the opposite but only weakly
    # right; the mean of logits follows the more confident model on each example.
    labels = np.array([0, 0, 0, 0])
    a = np.array([[4.0, 0], [4.0, 0], [0, 1.0], [0, 1.0]])
    b = np.array([[0, 2.0], [0, 2.0], [3.0, 0], [3.0, 0]])
    acc_gain, ce_gain = M.ensemble_gain_matrices(np.stack([a, b]), labels)
    # each member 50%; ensemble logits [2,1],[2,1],[1.5,.5],[1.5,.5] -> all correct: +50 pp
    assert acc_gain[0, 1] == pytest.approx(50.0)
    ens = (a + b) / 2
    ce = lambda z: M.cross_entropy(z[None], labels)[0]  # noqa: E731
    assert ce_gain[0, 1] == pytest.approx((ce(a) + ce(b)) / 2 - ce(ens))
    assert ce_gain[0, 1] > 0 and ce_gain[1, 0] == ce_gain[0, 1]


def test_identical_models_have_no_ensemble_gain():
    z = np.random.default_rng(1).normal(size=(2, 30, 5))
    z[1] = z[0]
    acc_gain, ce_gain = M.ensemble_gain_matrices(z, np.zeros(30, dtype=int))
    assert acc_gain[0, 1] == 0 and ce_gain[0, 1] == 0


def test_cka_identity_orthogonal_and_scale_invariance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert M.linear_cka(x, x) == pytest.approx(1.0)
    assert M.linear_cka(x, x @ q) == pytest.approx(1.0)
    assert M.linear_cka(x, 3.7 * x) == pytest.approx(1.0)
    y = rng.normal(size=(200, 6))
    assert M.linear_cka(x, y) < 0.3


def test_cka_matrix_matches_pairwise_function():
    f = np.random.default_rng(2).normal(size=(4, 50, 3))
    f[1] = f[0] @ np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))[0]
    c = M.cka_matrix(f)
    for i in range(4):
        for j in range(4):
            assert c[i, j] == pytest.approx(M.linear_cka(f[i], f[j]))
    assert c[0, 1] == pytest.approx(1.0)


def test_pair_statistic_uses_distinct_models_only():
    matrix = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [2.0, 3.0, 0.0]])
    stat = M._pair_statistic(matrix)
    assert stat(np.array([0, 1, 2])) == pytest.approx(2.0)
    assert stat(np.array([0, 0, 1])) == pytest.approx(1.0)  # the (0, 0) pair is skipped
    assert np.isnan(stat(np.array([2, 2, 2])))
    batch = stat(np.array([[0, 1, 2], [0, 0, 1]]))
    assert np.allclose(batch, [2.0, 1.0])


def test_bootstrap_se_zero_for_identical_and_positive_for_spread():
    assert M.bootstrap_se(np.full(6, 90.0), M._sd, 500, 0) == 0
    assert M.bootstrap_se(np.array([90.0, 91, 92, 89, 90.5]), M._sd, 500, 0) > 0


def test_summarize_row_and_control_zeros():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 100)
    same = np.repeat(rng.normal(size=(1, 100, 4)), 3, axis=0)
    row, _ = M.summarize(same, labels, np.repeat(rng.normal(size=(1, 100, 5)), 3, 0), 200, 0)
    assert row["n_replicas"] == 3
    assert row["disagreement"] == 0 and row["acc_sd"] == 0 and row["pearson"] == pytest.approx(1)
    assert row["cka"] == pytest.approx(1)
    varied = rng.normal(size=(4, 100, 4))
    row, mats = M.summarize(varied, labels, rng.normal(size=(4, 100, 5)), 200, 0)
    assert row["disagreement"] > 50 and row["disagreement_se"] > 0
    assert row["disagreement"] == pytest.approx(M.mean_over_pairs(mats["disagreement"]))


def test_ensemble_gain_matches_direct_computation():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(5, 200, 7)).astype(np.float32)
    z[1] = z[0] + 0.3 * z[1]
    labels = rng.integers(0, 7, 200)
    acc_gain, ce_gain = M.ensemble_gain_matrices(z, labels)
    for i in range(5):
        for j in range(i + 1, 5):
            ens = (z[i].astype(np.float64) + z[j]) / 2
            members = M.accuracy(z[[i, j]], labels).mean()
            assert acc_gain[i, j] == pytest.approx(M.accuracy(ens, labels) - members)
            ce_members = M.cross_entropy(z[[i, j]], labels).mean()
            assert ce_gain[i, j] == pytest.approx(ce_members - M.cross_entropy(ens, labels), abs=1e-5)


def test_accuracy_variance_split_is_exact_and_separates_the_parts():
    rng = np.random.default_rng(5)
    n, k = 2000, 3
    labels = np.zeros(n, dtype=int)

    def logits_from(correct):
        return onehot_logits(np.where(correct, 0, 1), k)

    # independent flips: every model right on each example with prob 0.9 -> all "indep"
    indep = np.stack([logits_from(rng.random(n) < 0.9) for _ in range(200)])
    split = M.accuracy_variance_split(indep, labels)
    acc = M.accuracy(indep, labels)
    assert split["acc_var"] == pytest.approx(np.var(acc, ddof=1))
    # against the covariance matrix of per-example correctness (another computation): indep is
    # its trace, shared its off-diagonal sum, both over n^2
    cov = np.cov((indep.argmax(-1) == labels).astype(float).T) * 1e4 / n**2
    assert split["acc_var_indep"] == pytest.approx(np.trace(cov))
    assert split["acc_var_shared"] == pytest.approx(cov.sum() - np.trace(cov), abs=1e-9)
    assert split["acc_var_indep"] == pytest.approx(0.09 / n * 1e4, rel=0.1)
    assert abs(split["acc_var_shared"]) < 0.35 * split["acc_var_indep"]  # ~3.5 SE
    assert split["acc_sd_binomial"] == pytest.approx(100 * np.sqrt(0.09 / n), rel=0.05)
    # a shared quality shift per model (the same examples flip together) -> "shared" dominates
    order = rng.permutation(n)
    shared = np.stack([logits_from(np.isin(np.arange(n), order[: int(n * q)])) for q in rng.uniform(0.8, 0.95, 40)])
    split = M.accuracy_variance_split(shared, labels)
    assert split["acc_var_shared"] > 10 * split["acc_var_indep"]


def test_variance_parts_have_bootstrap_standard_errors_that_match_their_spread():
    """The SE of each variance part, from one experiment of 8 replicas, is close to how much
    that part varies across independent experiments (simulated: per-replica shared quality
    shift plus independent per-example flips)."""
    rng = np.random.default_rng(8)
    n, m, labels = 500, 8, np.zeros(500, dtype=int)

    def experiment():
        q = np.clip(0.85 + rng.normal(0, 0.02, (m, 1)), 0, 1)  # shared part: quality per replica
        correct = rng.random((m, n)) < q
        return onehot_logits(np.where(correct, 0, 1), 3)

    splits = [M.accuracy_variance_split(experiment(), labels, 400, s) for s in range(60)]
    for part in ("acc_var", "acc_var_indep", "acc_var_shared"):
        spread = np.std([s[part] for s in splits], ddof=1)
        se = np.median([s[f"{part}_se"] for s in splits])
        assert 0.5 * spread < se < 1.5 * spread, part  # the bootstrap SE is a fair yardstick
    assert all(np.isnan(v) for k, v in M.accuracy_variance_split(experiment(), labels).items() if k.endswith("_se"))
