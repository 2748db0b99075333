"""The report's own pages, planned from rule all's targets and rendered from the tables: what
was run (trained, imported or both, with the replica counts the tables hold), tables as HTML,
each verdict beside its figure."""

import csv

from nondet.workflow import reportpages

DIVERSITY = ["results/tables/diversity.csv"]
COLUMNS = ["model", "condition", "n_replicas", "acc_sd", "disagreement"]


def write_csv(path, rows, columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(rows)


def test_pages_follow_the_targets():
    targets = DIVERSITY + [
        "results/tables/mitigation.csv",
        "results/compare/lr/verdict.csv",
        "results/runs/compare/ab/verdict.csv",
        "results/factorial/grid/components.csv",
        "results/runs/all_pairs.csv",
    ]
    pages = {p.name: p for p in reportpages.pages(targets)}
    assert set(pages) == {
        "overview",
        "table_diversity",
        "table_mitigation",
        "compare_lr",
        "runs_compare_ab",
        "factorial_grid",
        "runs_all_pairs",
    }
    assert pages["compare_lr"].inputs == {
        "md": "results/compare/lr/verdict.md",
        "png": "results/compare/lr/summary.png",
    }
    assert pages["compare_lr"].category == "Is it real?"
    # the overview reads every verdict and the mitigation table for its headline
    assert pages["overview"].inputs["verdict:lr (comparison)"] == "results/compare/lr/verdict.md"
    assert pages["overview"].inputs["mitigation"] == "results/tables/mitigation.csv"
    assert {p.name for p in reportpages.pages(DIVERSITY)} == {"overview", "table_diversity"}
    # the job plans them again from its input files alone (no params to clutter the report)
    inputs = [f for p in pages.values() for f in p.inputs.values()]
    again = {p.name: p for p in reportpages.pages_from_inputs(inputs)}
    assert again == pages


def test_overview_states_what_was_run_for_imported_and_trained_groups(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [
        {"model": "cnn", "condition": "control", "n_replicas": 8, "acc_sd": 0.0, "disagreement": 0.0},
        {"model": "cnn", "condition": "all", "n_replicas": 8, "acc_sd": 0.31, "disagreement": 4.2},
        {"model": "mine", "condition": "seed", "n_replicas": 4, "acc_sd": 0.5, "disagreement": 7.5},
    ]
    write_csv(tmp_path / DIVERSITY[0], rows, COLUMNS)
    run = {"experiment": "x", "dataset": "mnist1d", "device": "cpu", "imported": [["mine", "seed"]]}
    (page,) = [p for p in reportpages.pages(DIVERSITY) if p.name == "overview"]
    text = reportpages.overview(page, run)
    assert "<b>cnn</b> (control, all; 8 replicas each)" in text
    assert "Imported runs (not trained by this workflow): <b>mine</b>/seed (4 runs)" in text
    assert "<code>all</code>: SD of test accuracy 0.31 percentage points, 4.20 %" in text
    assert "<b>mine</b>: the largest run-to-run variability is in <code>seed</code>" in text
    only_imported = reportpages.overview(
        page, {**run, "imported": [["cnn", "control"], ["cnn", "all"], ["mine", "seed"]]}
    )
    assert "Trained here" not in only_imported and "replicas each" not in only_imported


def test_verdict_page_sets_the_text_beside_the_figure_and_tables_render(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "results/compare/lr"
    folder.mkdir(parents=True)
    (folder / "verdict.md").write_text("**accuracy**: not significant.\n")
    (folder / "summary.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    (tmp_path / "results/tables").mkdir(parents=True)
    (tmp_path / "results/tables/mitigation.md").write_text("| method | x |\n|---|---|\n| tta | 1.0 |\n\nlegend\n")
    pages = reportpages.pages(["results/compare/lr/verdict.csv", "results/tables/mitigation.csv"])
    run = {"experiment": "x", "dataset": "d", "device": "cpu", "imported": []}
    verdict = reportpages.render(next(p for p in pages if p.name == "compare_lr"), run)
    assert '<div class="verdict"><div><p><strong>accuracy</strong>: not significant.</p></div>' in verdict
    assert 'src="data:image/png;base64,' in verdict
    table = reportpages.render(next(p for p in pages if p.name == "table_mitigation"), run)
    assert "<table>" in table and "<td>tta</td>" in table and "<p>legend</p>" in table
