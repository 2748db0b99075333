"""The real workflow, run by Snakemake in a temporary directory on a tiny config: the session's
shared run of TINY (tests/shared_run.py), which is also config.yaml's and
configs/compare_example.yaml's DAG check (tests/test_config_dags.py's RUN_ELSEWHERE)."""

import copy
import csv
import json
import os
import subprocess

import helpers
import pytest
import yaml
from helpers import REPO, SNAKEMAKE, planned_outputs
from shared_run import OUTPUT, TINY, dry_run
from test_config_dags import check_covers_reduction, check_every_rule_ran

pytestmark = pytest.mark.slow  # every test here starts a subprocess

# the report's pages (rule report_pages) follow any table they render
TINY_REPORT_PAGES = {
    f"results/report/{p}.html"
    for p in ("overview", "table_diversity", "table_stability", "table_mitigation", "table_ensembles")
} | {"results/report/compare_lr.html", "results/report/factorial_grid.html"}


def snakemake(workdir, *args, config=TINY, check=True):
    return helpers.snakemake(workdir, *args, config=config, check=check)


@pytest.fixture
def finished_run(tiny_run):
    """The session's shared run of TINY (tests/conftest.py), report included; read-only: the
    tests below only read it and dry-run Snakemake in it."""
    return tiny_run


#: The shipped configs whose DAG the shared run executes (tests/test_config_dags.py's RUN_ELSEWHERE):
#: compare_example's exactly, config.yaml's (compare_example without its two sections) within it.
DAG_CONFIGS = (REPO / "configs/compare_example.yaml", REPO / "config.yaml")


@pytest.mark.parametrize("path", DAG_CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_rule_of_config_yaml_and_compare_example_runs(finished_run, path, tmp_path):
    """The shared run planned the rules of the config's full DAG (compare_example's exactly) and
    ran each, and TINY trains every kind that the config's reduction in test_config_dags would."""
    (tmp_path / "plan").mkdir()
    exact = path != REPO / "config.yaml"
    check_every_rule_ran(path, (finished_run / OUTPUT).read_text(), tmp_path / "plan", exact=exact)
    check_covers_reduction(path, TINY, tmp_path / "stand-in")
    assert (finished_run / "results/tables/paper_comparison.csv").stat().st_size > 0


def test_end_to_end_outputs(finished_run):
    res = finished_run / "results"
    for path in (
        "tables/diversity.csv",
        "tables/diversity.md",
        "tables/provenance.csv",
        "figures/diversity_cnn.pdf",
        "figures/diversity_cnn.png",
        "figures/diversity_linear.pdf",
        "figures/diversity_linear.png",
        "figures/diversity_mlp.png",
        "figures/divergence_cnn.png",
        "figures/stability_by_family.png",
        "figures/mitigation.png",
        "tables/stability.csv",
        "tables/mitigation.csv",
        "compare/lr/summary.csv",
        "compare/lr/verdict.csv",
        "compare/lr/verdict.md",
        "compare/lr/plan.csv",
        "compare/lr/summary.png",
        "factorial/grid/components.csv",
        "report.html",
    ):
        assert (res / path).stat().st_size > 0, path
    rows = {(r["model"], r["condition"]): r for r in csv.DictReader(open(res / "tables/diversity.csv"))}
    assert set(rows) == {
        ("cnn", "control"),
        ("cnn", "dropout"),
        ("cnn", "all"),
        ("cnn", "bitflip"),
        ("linear", "control"),
        ("linear", "bitflip"),
        ("mlp", "bitflip"),
    }
    assert float(rows[("cnn", "control")]["disagreement"]) == 0.0
    assert float(rows[("cnn", "control")]["acc_sd"]) == 0.0
    assert float(rows[("cnn", "all")]["disagreement"]) > 0.0
    assert rows[("cnn", "all")]["n_replicas"] == "3"
    assert rows[("cnn", "all")]["device"] == "cpu"
    assert "cpu-standin" in rows[("cnn", "all")]["kernels_mode"]
    # absorbed one-ulp flips: the table's count is exactly bitwise equality with control replica 0
    # (same seeds, no flip), whatever this CPU's rounding made of the flips
    from nondet.io.files import load_replicas
    from nondet.workflow.torch_stages import same_weights

    control = load_replicas(res / "train/linear/control/chunk0.h5")[0]["weights"]
    flipped = [r for p in sorted((res / "train/linear/bitflip").glob("chunk*.h5")) for r in load_replicas(p)]
    absorbed = sum(same_weights(r["weights"], control) for r in flipped)
    assert float(rows[("linear", "bitflip")]["n_absorbed"]) == absorbed
    assert rows[("linear", "control")]["n_absorbed"] == ""  # no flip, nothing to count
    assert f"linear/bitflip: {absorbed} of 3 one-ulp flips absorbed" in (res / "tables/diversity.md").read_text()
    mit = list(csv.DictReader(open(res / "tables/mitigation.csv")))
    assert [r["method"] for r in mit] == [
        "plain",
        "tta",
        "snapshot",
        "snapshot+tta",
        "ema",
        "ema+tta",
        "swa",
        "swa+tta",
    ]
    # TTA: 3 shifts (-1, 0, +1); snapshot: 2 cycles' weights; EMA and SWA: one set of weights each
    assert [r["test_passes"] for r in mit] == ["1", "3", "2", "6", "1", "3", "1", "3"]
    # plain against itself (its SD of accuracy may be 0 by chance with 3 replicas: not that one)
    assert float(mit[0]["disagreement_reduction"]) == 0.0
    assert all(r["variability_reduction"] != "" for r in mit[1:])  # the paper's 5-metric column
    # the ensemble stage: k = 1 (3 replicas leave no two disjoint pairs) is the single models,
    # its row the diversity table's variability, beside the methods at one training run
    import h5py
    import numpy as np

    from nondet.io.files import load_predictions

    with h5py.File(res / "ensembles/cnn/all.h5") as f:
        assert sorted(f) == ["k1", "labels"]
        members, ens = f["k1/members"][()], f["k1/logits"][()]
        k1 = json.loads(f["k1"].attrs["row"])
    assert members.tolist() == [[0], [1], [2]]
    single = load_predictions(sorted((res / "predict/cnn/all").glob("chunk*.h5")))
    np.testing.assert_array_equal(ens, single["logits"][np.argsort(single["replicas"])])
    assert k1["acc_sd"] == pytest.approx(float(rows[("cnn", "all")]["acc_sd"]))
    assert k1["disagreement"] == pytest.approx(float(rows[("cnn", "all")]["disagreement"]))
    ens_rows = list(csv.DictReader(open(res / "tables/ensembles.csv")))
    assert [(r["method"], r["train_runs"]) for r in ens_rows] == [
        (m, "1") for m in ("ensemble", "tta", "snapshot", "snapshot+tta", "ema", "ema+tta", "swa", "swa+tta")
    ]
    assert (res / "figures/ensembles.png").stat().st_size > 0
    cmp = {r["metric"]: r for r in csv.DictReader(open(res / "compare/lr/verdict.csv"))}
    assert set(cmp) == {"accuracy", "cross_entropy"} and cmp["accuracy"]["runs_candidate"] == "3"
    welch = next(
        r
        for r in csv.DictReader(open(res / "compare/lr/summary.csv"))
        if r["metric"] == "accuracy" and r["test"] == "welch"
    )
    acc = {}  # each arm's mean accuracy recomputed from its prediction files
    for arm in ("baseline", "candidate"):
        pred = load_predictions(sorted((res / f"compare/lr/{arm}").glob("predict_chunk*.h5")))
        acc[arm] = 100 * (pred["logits"].argmax(-1) == pred["labels"]).mean()
    assert float(welch["baseline_mean"]) == pytest.approx(acc["baseline"])
    assert float(cmp["accuracy"]["difference"]) == pytest.approx(acc["candidate"] - acc["baseline"])
    # the 3 runs of an arm can tie by chance (SD 0): then the verdict says so instead of an interval
    if float(welch["baseline_sd"]) + float(welch["candidate_sd"]) > 0:
        assert float(cmp["accuracy"]["diff_low"]) < float(cmp["accuracy"]["diff_high"])
    assert "every source of randomness varies" in cmp["accuracy"]["held_fixed"]
    assert cmp["accuracy"]["decision"] in (res / "compare/lr/verdict.md").read_text().lower()
    effects = [r["effect"] for r in csv.DictReader(open(res / "factorial/grid/components.csv"))]
    assert effects == ["init", "shuffle", "residual", "total", "indep"] * 2
    all_row = rows[("cnn", "all")]
    assert float(all_row["acc_var"]) == pytest.approx(float(all_row["acc_sd"]) ** 2, rel=1e-6)
    # every part of the accuracy variance has a bootstrap SE: the per-example part's (and so the
    # shared part's) varies whenever replicas disagree; the total's is 0 only if the 3 replicas'
    # accuracies tie, which can happen by chance on some CPU
    assert float(all_row["acc_var_indep_se"]) > 0 and float(all_row["acc_var_shared_se"]) > 0
    assert (float(all_row["acc_var_se"]) > 0) == (float(all_row["acc_sd"]) > 0)
    html = (res / "report.html").read_text(errors="replace")
    assert "diversity.csv" in html and "provenance.csv" in html
    # the default on a CPU: a chunk's CNN replicas train together as one wide model
    train_log = (finished_run / "logs/train/cnn/all/chunk0.log").read_text()
    assert "as one wide model" in train_log and train_log.count("epoch 2/2 (2 replicas vectorised)") == 1


def test_rerun_after_editing_one_condition_touches_only_its_jobs(finished_run, tmp_path):
    nothing = dry_run(finished_run, tmp_path)
    assert planned_outputs(nothing) == set()
    changed = {**TINY, "overrides": {"cnn": {"bitflip": {"epochs": 3}}}}
    out = dry_run(finished_run, tmp_path, config=changed)
    assert planned_outputs(out) == {
        "results/train/cnn/bitflip/chunk0.h5",
        "results/train/cnn/bitflip/chunk1.h5",
        "results/predict/cnn/bitflip/chunk0.h5",
        "results/predict/cnn/bitflip/chunk1.h5",
        "results/metrics/cnn/bitflip.h5",
        "results/tables/diversity.csv",
        "results/tables/diversity.md",
        "results/figures/diversity_cnn.pdf",
        "results/figures/diversity_cnn.png",
        "results/tables/stability.csv",  # cnn/bitflip is one of the stability rows
        "results/tables/stability.md",
        "results/figures/stability_by_family.pdf",
        "results/figures/stability_by_family.png",
        "results/tables/provenance.csv",  # records the whole config, so it follows any edit
        *TINY_REPORT_PAGES,
    }


def test_changing_checkpoint_every_reruns_no_training(finished_run, tmp_path):
    """How often to checkpoint changes no result: only provenance.csv (which records the whole
    config) follows the edit; it was a param of the train rules and retrained everything."""
    out = dry_run(finished_run, tmp_path, config={**TINY, "checkpoint_every": 7})
    assert planned_outputs(out) == {"results/tables/provenance.csv"}


def test_editing_a_comparison_arm_reruns_only_that_arm(finished_run, tmp_path):
    changed = copy.deepcopy(TINY)
    changed["comparisons"]["lr"]["candidate"]["training"]["lr"] = 0.02
    out = dry_run(finished_run, tmp_path, config=changed)
    assert planned_outputs(out) == {
        "results/compare/lr/candidate/train_chunk0.h5",
        "results/compare/lr/candidate/train_chunk1.h5",
        "results/compare/lr/candidate/predict_chunk0.h5",
        "results/compare/lr/candidate/predict_chunk1.h5",
        "results/compare/lr/summary.csv",
        "results/compare/lr/verdict.csv",
        "results/compare/lr/verdict.md",
        "results/compare/lr/plan.csv",
        "results/compare/lr/summary.pdf",
        "results/compare/lr/summary.png",
        "results/tables/provenance.csv",
        *TINY_REPORT_PAGES,
    }


def test_one_figure_builds_only_its_upstream(tmp_path):
    out = snakemake(tmp_path, "-n", "results/figures/diversity_linear.png")
    planned = planned_outputs(out)
    assert "results/figures/diversity_linear.png" in planned
    assert "results/metrics/linear/bitflip.h5" in planned
    assert not any("/cnn" in p or "diversity.csv" in p for p in planned), planned


def test_invalid_config_fails_before_any_job(tmp_path):
    bad = {**TINY, "training": {"epochs": "two"}}
    out = snakemake(tmp_path, "--cores", "1", config=bad, check=False)
    assert out.returncode != 0
    assert "training.epochs" in out.stderr + out.stdout
    assert not (tmp_path / "results").exists()
    typo = {**TINY, "replicass": 4}
    out = snakemake(tmp_path, "-n", config=typo, check=False)
    assert out.returncode != 0 and "replicass" in out.stderr + out.stdout


def test_killed_run_resumes_where_it_stopped(tmp_path):
    """SIGKILL the whole Snakemake run mid-training; rerun; training resumes from checkpoints."""
    import signal
    import time

    config = {
        "replicas": 2,
        "dataset": {"num_samples": 5000},
        "training": {"epochs": 30, "eval_every": 0},
        "models": {"cnn": {"arch": "cnn1d", "conditions": ["init"]}},
        "metrics": {"bootstrap_resamples": 100},
    }
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    cmd = SNAKEMAKE + ["--directory", str(tmp_path), "--configfile", str(cfg_path), "--cores", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = tmp_path / "results/train/cnn/init/.chunk0.h5.checkpoints/vectorized.pt"  # the wide path
    deadline = time.time() + 300
    while not ckpt.exists():
        assert proc.poll() is None and time.time() < deadline, "training never checkpointed"
        time.sleep(0.01)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (tmp_path / "results/train/cnn/init/chunk0.h5").exists()
    snakemake(tmp_path, "--unlock", config=config)
    snakemake(tmp_path, "--cores", "2", config=config)
    log = (tmp_path / "logs/train/cnn/init/chunk0.log").read_text()
    assert "resuming from checkpoint" in log
    rows = list(csv.DictReader(open(tmp_path / "results/tables/diversity.csv")))
    assert rows[0]["n_replicas"] == "2" and float(rows[0]["disagreement"]) > 0
