"""Figures that say what they show: zero told from missing in the stability figure, units in the
comparison figure's labels."""

import pandas as pd

from nondet.analysis import plots


def captured(monkeypatch):
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, *paths: figs.append(fig))
    return figs


def texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_stability_figure_tells_zero_from_missing(monkeypatch):
    figs = captured(monkeypatch)
    df = pd.DataFrame(
        [
            dict(model="linear", condition="init", disagreement=3.0, acc_sd=0.2, pearson=0.9),
            dict(model="linear", condition="bitflip", disagreement=0.0, acc_sd=0.0, pearson=1.0),
            dict(model="mlp", condition="init", disagreement=5.0, acc_sd=0.4, pearson=0.8),
        ]
    )
    plots.stability_figure(df, "a.pdf", "a.png")
    (fig,) = figs
    labels = texts(fig)
    assert labels.count("0") == 2  # linear's bitflip: disagreement and SD are exactly zero
    assert labels.count("n/a") == 3  # mlp has no bitflip row: one mark per panel
    assert "(not run: mlp: no bitflip)" in fig._suptitle.get_text()
    assert [ax.get_title() for ax in fig.axes][:2] == [
        "pairwise disagreement (% of test examples)",
        "SD of accuracy (percentage points)",
    ]


def test_comparison_figure_gives_differences_in_points_and_nats(monkeypatch):
    import numpy as np

    figs = captured(monkeypatch)
    row = dict(
        decision="not significant",
        difference=-0.55,
        diff_low=-1.0,
        diff_high=0.1,
        diff_test="welch",
        p_value=0.2,
        p_better=0.4,
        p_better_low=0.1,
        p_better_high=0.7,
    )
    verdicts = pd.DataFrame([{**row, "metric": "accuracy"}, {**row, "metric": "cross_entropy"}])
    arm = {"accuracy": np.array([90.0, 91.0]), "cross_entropy": np.array([0.3, 0.31])}
    plots.comparison_figure({"baseline": arm, "candidate": arm}, verdicts, "x", "a.pdf", "a.png")
    (fig,) = figs
    acc, ce = fig.axes
    assert "candidate - baseline -0.55 pt" in acc.get_title() and "%" not in acc.get_title().split("\n")[1]
    assert "-0.55 nats" in ce.get_title()
    assert acc.get_ylabel() == "test accuracy (%)" and ce.get_ylabel() == "test cross-entropy (nats)"
