"""Figures draw every panel they list (issue 35: a 7th panel was once dropped without a word)."""

import pytest

from nondet.analysis import plots


def _rows():
    base = {"n_replicas": 4, "device": "cpu", "kernels_mode": ""}
    return [{**base, "condition": c, **{k: 1.0 for k, _ in plots.PANELS}} for c in ("control", "init", "all")]


@pytest.mark.parametrize("extra", [0, 1, 4])
def test_every_listed_panel_gets_its_axes(tmp_path, monkeypatch, extra):
    panels = [*plots.PANELS, *[(f"new_{i}", f"new panel {i}") for i in range(extra)]]
    monkeypatch.setattr(plots, "PANELS", panels)
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, *paths: drawn.append(fig))
    plots.diversity_figure(_rows(), "t", tmp_path / "f.pdf", tmp_path / "f.png")
    titles = [ax.get_title() for ax in drawn[0].axes if ax.get_visible()]
    assert titles == [name for _, name in panels]
