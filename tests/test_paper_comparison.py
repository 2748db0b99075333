"""paper/expected.csv and the comparison of a run's tables with it (nondet.paper)."""

import math
from pathlib import Path

import pandas as pd
import pytest

from nondet.paper import paper_comparison

EXPECTED = Path(__file__).resolve().parent.parent / "paper/expected.csv"


def test_expected_numbers_are_sourced():
    e = pd.read_csv(EXPECTED)
    assert e["source"].notna().all() and (e["source"].str.len() > 20).all()
    assert set(e["table"]) <= {"diversity", "mitigation"}
    allrow = e[(e["table"] == "diversity") & (e["condition"] == "all")].set_index("metric")
    # the "all sources" row
    assert allrow.loc["acc_sd", "value"] == 0.26 and allrow.loc["acc_sd", "se"] == 0.02
    assert allrow.loc["ce_sd", "value"] == 0.0072 and allrow.loc["ce_sd", "se"] == 0.0005
    assert allrow.loc["disagreement", "value"] == 10.7 and allrow.loc["pearson", "value"] == 0.871
    assert allrow.loc["ens_acc_gain", "value"] == 1.82


def test_conversions_and_differences_in_se():
    expected = pd.DataFrame([
        {"table": "diversity", "model": "r", "condition": "all", "method": "plain",
         "metric": m, "value": v, "se": se, "convention": "", "source": "test"}
        for m, v, se in [("acc_sd", 0.26, 0.02), ("ens_ce_gain", -0.01, None),
                         ("disagreement", 10.7, None), ("pearson", 0.9, None)]
    ])  # fmt: skip
    n = 4
    ours = pd.DataFrame([{"model": "r", "condition": "all", "n_replicas": n, "acc_sd": 0.4,
                          "acc_sd_se": 0.1, "ens_ce_gain": 0.02, "ens_ce_gain_se": 0.005,
                          "disagreement": 11.7, "disagreement_se": 0.5}])  # fmt: skip
    df = paper_comparison(expected, ours).set_index("metric")
    f = math.sqrt((n - 1) / n)
    assert df.loc["acc_sd", "ours"] == pytest.approx(0.4 * f)  # ddof 1 -> ddof 0
    assert df.loc["acc_sd", "ours_se"] == pytest.approx(0.1 * f)
    assert df.loc["acc_sd", "diff_in_se"] == pytest.approx((0.4 * f - 0.26) / (0.1 * f))
    assert df.loc["acc_sd", "z"] == pytest.approx((0.4 * f - 0.26) / math.hypot(0.1 * f, 0.02))
    assert df.loc["ens_ce_gain", "ours"] == pytest.approx(-0.02)  # sign: ensemble - member
    assert df.loc["ens_ce_gain", "diff_in_se"] == pytest.approx((-0.02 + 0.01) / 0.005)
    assert df.loc["disagreement", "diff_in_se"] == pytest.approx(2.0)  # no conversion
    assert "pearson" not in df.index  # a metric the run's table lacks is left out
