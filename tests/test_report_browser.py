"""The HTML report in a real browser (Debian's headless chromium; `make test` installs it): the
session's shared TINY run (tests/shared_run.py: three models, a comparison `lr` on `cnn`) and its
`snakemake --report`, then what a reader sees: the landing page states what was run and the
headline findings, each table is rendered inside the report, and the verdict text is beside its
figure. Missing chromium FAILS the test; NONDET_SKIP_BROWSER_TEST=1 skips it explicitly."""

import csv
import os
import re

import pytest
from report_browser import Browser, chromium_binary
from shared_run import REPORT

if os.environ.get("NONDET_SKIP_BROWSER_TEST") == "1":
    pytest.skip("NONDET_SKIP_BROWSER_TEST=1", allow_module_level=True)


@pytest.mark.slow
def test_report_shows_what_was_run_tables_and_verdicts_in_chromium(tiny_run):
    if chromium_binary() is None:
        pytest.fail("chromium not found: scripts/install-chromium.sh (make test runs it)")
    report = tiny_run / REPORT  # built by the shared run's fixture; only read here
    # each result's "Job parameters" (nondet.workflow.shown): sentences, not input paths and hashes
    params = re.findall(r'"params": *"((?:[^"\\]|\\.)*)"', report.read_text())
    assert params and all("spec_hash" not in p and "results/" not in p for p in params), params
    assert any("expect=the spec, data and code hashes" in p for p in params)
    assert any(p.startswith("code=") and "compare=comparison: name=lr" in p for p in params), params
    with Browser() as b:
        b.open(report)
        landing = b.text()
        assert "What was run: experiment tiny" in landing
        assert (
            "cnn (control, dropout, all, bitflip; 3 replicas each); linear (control, bitflip; 3 replicas each); "
            "mlp (bitflip; 3 replicas each)"
        ) in landing
        # the headline names the condition with the largest disagreement in the run's own table
        # (whichever condition this CPU's training made largest; never a fixed one)
        rows = [r for r in csv.DictReader(open(tiny_run / "results/tables/diversity.csv")) if r["model"] == "cnn"]
        top = max(rows, key=lambda r: float(r["disagreement"]))["condition"]
        assert top != "control"
        assert "Headline findings" in landing and f"cnn: the largest run-to-run variability is in {top}" in landing
        assert "lr accuracy: NOT SIGNIFICANT" in landing or "lr accuracy: SIGNIFICANT" in landing
        assert "JOB PARAMETERS" not in landing and "Each condition trains" not in landing

        b.show_category("Diversity")
        assert "results/report/table_diversity.html" in b.text()  # listed in its category
        b.show_result("results/report/table_diversity.html")
        (table,) = b.frame_texts()
        header = table.splitlines()[0].split("\t")
        assert header[:4] == ["model", "condition", "replicas", "acc mean ± SD (%)"]
        rows = [line.split("\t")[:3] for line in table.splitlines()[1:8]]
        assert rows == [
            ["cnn", "control", "3"],
            ["cnn", "dropout", "3"],
            ["cnn", "all*", "3"],
            ["cnn", "bitflip", "3"],
            ["linear", "control", "3"],
            ["linear", "bitflip", "3"],
            ["mlp", "bitflip", "3"],
        ]

        b.show_category("Is it real?")
        b.show_result("results/report/compare_lr.html")
        (verdict,) = b.frame_texts()
        assert verdict.startswith("Comparison lr: candidate against baseline")
        assert "lr accuracy:" in verdict and "lr cross_entropy:" in verdict
        # the figure is in the same page, to the right of the text
        (box,) = b.in_frames(
            "(() => { const t = document.querySelector('.verdict > div:first-child').getBoundingClientRect(); "
            "const i = document.querySelector('.verdict img').getBoundingClientRect(); "
            "return [t.right <= i.left + 1, i.width > 200, i.top < t.bottom]; })()"
        )
        assert box == [True, True, True], box
