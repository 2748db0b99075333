"""The Markdown diversity table shows a reader's columns and the notes; the CSV keeps every column.
Pure table code, no training (well under a second)."""

import pandas as pd
import pytest

from nondet.analysis.tables import READER_COLUMNS, diversity_frame, table_notes, write_table


def _row(model, condition, **extra):
    row = {
        "model": model,
        "condition": condition,
        "device": "cpu",
        "n_replicas": 4,
        "acc_mean": 96.4213,
        "acc_sd": 0.2601,
        "acc_sd_se": 0.05,
        "ce_mean": 0.15212,
        "ce_sd": 0.0052,
        "ce_sd_se": 0.001,
        "disagreement": 3.1712,
        "disagreement_se": 0.1799,
        "pearson": 0.9451,
        "spearman": 0.94,
        "ens_acc_gain": 0.4521,
        "ens_ce_gain": 0.01,
        "cka": 0.9251,
        "n_absorbed": float("nan"),
        "n_identical_pairs": 0,
        "kernels_mode": "deterministic",
        "cka_on": "features",
        "acc_var_shared": -0.084,
        "acc_var_shared_se": 0.02,
    }
    row.update(extra)
    return row


def test_diversity_markdown_is_for_a_reader_and_the_csv_keeps_everything(tmp_path):
    df = diversity_frame(
        [
            _row("cnn", "all", kernels_mode="cpu-standin-batch-permutation"),
            _row("cnn", "bitflip", n_absorbed=1.0),
            _row("linear", "init", cka_on="logits"),
            _row("cnn", "control", acc_sd=0.0, disagreement=0.0, disagreement_se=0.0, n_identical_pairs=6),
        ]
    )
    csv, md = tmp_path / "diversity.csv", tmp_path / "diversity.md"
    write_table(df, csv, md, notes=table_notes(df), reader=True)

    assert list(pd.read_csv(csv).columns) == list(df.columns)  # every column, the SEs included
    text = md.read_text()
    header = text.splitlines()[0]
    assert [h.strip() for h in header.strip("|").split("|")] == list(READER_COLUMNS)
    assert "acc_var_shared" not in header and "spearman" not in header
    lines = text.splitlines()
    control = next(line for line in lines if "| control" in line)
    assert "96.42 ± 0.00" in control and "0.00 ± 0.00" in control
    row_all = next(line for line in lines if "| all*" in line)  # the stand-in is marked
    assert "96.42 ± 0.26" in row_all and "3.17 ± 0.18" in row_all and "+0.45" in row_all
    assert "| 1 of 4" in next(line for line in lines if "| bitflip" in line)
    assert "0.925 †" in next(line for line in lines if line.startswith("| linear"))
    assert "* kernels: a CPU stand-in" in text and "† CKA computed on the logits" in text
    assert f"Every column ({len(df.columns)}:" in text and "diversity.csv" in text
    assert "cnn/bitflip: 1 of 4 one-ulp flips absorbed" in text  # the notes follow the table
    assert "WARNING" not in text


def test_plain_markdown_still_has_every_column(tmp_path):
    df = pd.DataFrame({"method": ["plain", "tta"], "acc_sd": [0.38, 0.25], "acc_sd_se": [0.08, 0.04]})
    write_table(df, tmp_path / "m.csv", tmp_path / "m.md", notes=["a note"])
    text = (tmp_path / "m.md").read_text()
    assert "acc_sd_se" in text.splitlines()[0] and "\na note\n" in text


@pytest.mark.parametrize("view", ["mitigation", "budget", "ensembles"])
def test_reader_views_show_a_few_columns_and_name_the_csv_that_keeps_every_one(tmp_path, view):
    """Issue 25: mitigation, budget and ensembles tables read like the diversity table: a few
    columns with mean ± SD cells, the legend, the notes, and the CSV with every column."""
    from nondet.analysis.tables import READER_VIEWS

    columns, _ = READER_VIEWS[view]
    row = {
        "model": "cnn",
        "condition": "all",
        "method": "tta",
        "n_replicas": 8,
        "test_passes": 5,
        "epochs": 4,
        "models_averaged": 1,
        "train_runs": 1,
        "n_ensembles": 8,
        "acc_mean": 97.2,
        "acc_sd": 0.28,
        "acc_sd_se": 0.05,
        "ce_mean": 0.13,
        "ce_sd": 0.009,
        "disagreement": 2.0,
        "disagreement_se": 0.13,
        "acc_sd_reduction": 54.6,
        "disagreement_reduction": 47.5,
        "variability_reduction": 43.5,
        "acc_sd_vs_plain": -54.6,
        "disagreement_vs_plain": -47.5,
        "pearson": 0.95,
        "extra_1": 1,
        "extra_2": 2,
    }
    df = pd.DataFrame([row])
    write_table(df, tmp_path / "t.csv", tmp_path / "t.md", notes=["a note"], reader=view)
    text = (tmp_path / "t.md").read_text()
    header = [h.strip() for h in text.splitlines()[0].strip("|").split("|")]
    assert header == list(columns) and len(header) < len(df.columns)
    assert "97.20 ± 0.28" in text and "extra_1" not in text and "acc_sd_se" not in text
    assert f"Every column ({len(df.columns)}" in text and "t.csv" in text and "\na note\n" in text
    assert list(pd.read_csv(tmp_path / "t.csv").columns) == list(df.columns)


def test_kernels_mode_is_derived_from_what_the_replicas_did():
    """Issue 22: the kernels mode in the table comes from identical pairs within and across jobs,
    not from the flags alone (on CUDA, replicas sharing a process share cuDNN's autotuned kernels)."""
    import numpy as np

    from nondet.analysis.identical import identical_pairs_by_job, measured_kernels_mode

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    # four replicas in two jobs; within each job the replicas are bitwise identical
    counts = identical_pairs_by_job(np.stack([a, a, b, b]), np.array([0, 0, 1, 1]))
    assert counts == {
        "pairs_within_jobs": 2,
        "identical_within_jobs": 2,
        "pairs_across_jobs": 4,
        "identical_across_jobs": 0,
    }
    row = {"kernels_mode": "cuda-nondeterministic", "condition": "kernels", **counts}
    assert "differs only across jobs" in measured_kernels_mode(row)
    every = identical_pairs_by_job(np.stack([a, a, a, a]), np.array([0, 0, 1, 1]))
    assert "no effect" in measured_kernels_mode({**row, **every})
    none = identical_pairs_by_job(np.stack([a, b, a + 1, b + 1]), np.array([0, 0, 1, 1]))
    assert measured_kernels_mode({**row, **none}) == "cuda-nondeterministic"
    # other conditions, and deterministic kernels, keep the flag's mode
    assert measured_kernels_mode({**row, **every, "condition": "all"}) == "cuda-nondeterministic"
    assert measured_kernels_mode({**row, **every, "kernels_mode": "deterministic"}) == "deterministic"
    # a config-defined condition that varies the kernels alone is measured too
    assert "no effect" in measured_kernels_mode({**row, **every, "condition": "k2"}, ["kernels"])
    notes = table_notes(
        pd.DataFrame([{**_row("resnet14", "kernels"), **row, **counts, "kernels_mode": measured_kernels_mode(row)}])
    )
    assert any("replicas_per_job: 1" in line for line in notes)
