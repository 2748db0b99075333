"""Mitigation versus training budget (config budget, rules/budget.smk, target mitigation_budget):
its config checks, its jobs as the protocol's with other epochs, its dry run beside `all`, and one
tiny end-to-end run."""

import copy
import csv
import math
import re

import helpers
import pytest
from helpers import default_config, planned_outputs

from nondet.workflow import config as cfg
from nondet.workflow import expect, plan, plan_methods

DEFAULT = default_config()  # the repository's config.yaml, wherever pytest runs


def with_changes(**changes) -> dict:
    """config.yaml with ``section__key=value`` changes (not yet validated)."""
    c = copy.deepcopy(DEFAULT)
    for path, value in changes.items():
        *keys, last = path.split("__")
        node = c
        for k in keys:
            node = node.setdefault(k, {})
        node[last] = value
    return c


# --- config ----------------------------------------------------------------------------------


def test_default_config_studies_the_cnn_at_four_budgets():
    c = cfg.validate(DEFAULT)
    assert c["budget"] == {"models": ["cnn"], "epochs": [15, 30, 60, 120]}
    # schema defaults: nothing studied unless models are named
    assert cfg.validate({"models": {"m": {"arch": "linear", "conditions": ["all"]}}})["budget"] == {
        "models": [],
        "epochs": [15, 30, 60, 120],
    }


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"budget__epochs": [15, 32]},
            "config key budget.epochs.1: 32 epochs are not divisible by the 5 cycles of mitigation.snapshot_cycles",
        ),
        (
            {"budget__models": ["resnet9"]},
            "config key budget.models: unknown model 'resnet9' (models: cnn, linear, mlp)",
        ),
        ({"budget__models": ["mlp"]}, "config key budget.models: model 'mlp' does not run condition 'all'"),
        (
            {"training__warmup_epochs": 1, "budget__epochs": [5, 15]},
            "config key budget.epochs.0: at 5 epochs the warm-up",
        ),
        ({"budget__epoch": [15]}, "config key budget.epoch: unknown key (allowed keys: epochs, models)"),
        ({"budget__epochs": [15, 15]}, "config key budget.epochs"),
        ({"budget__epochs": []}, "config key budget.epochs"),
        ({"budget__epochs": [15.0]}, "config key budget.epochs.0: 15.0 is not of type 'integer'"),
        ({"budget__models": "cnn"}, "config key budget.models: 'cnn' is not of type 'array'"),
    ],
)
def test_invalid_budget_names_the_key(changes, message):
    with pytest.raises(cfg.ConfigError) as err:
        cfg.validate(with_changes(**changes))
    assert message in str(err.value)


def test_budgets_are_not_checked_when_no_model_is_studied():
    c = cfg.validate(with_changes(budget__models=[], budget__epochs=[7]))
    assert c["budget"]["epochs"] == [7]


# --- the plan ----------------------------------------------------------------------------------


def test_a_budget_job_is_the_protocols_job_with_other_epochs():
    c = cfg.validate(DEFAULT)
    base, snap = plan.train_job(c, "cnn", "all", 0), plan.run_job(c, "cnn", "all", 0, "snapshot")
    for run, normal, cycles in (("plain", base, 1), ("snapshot", snap, 5)):
        job = plan.budget_job(c, "cnn", "all", 60, 0, run)
        assert {k for k in job if job[k] != base[k]} == {"recipe", "spec_hash"}
        changed = {k for k in job["recipe"] if job["recipe"][k] != base["recipe"][k]}
        assert changed == ({"epochs"} if run == "plain" else {"epochs", "cycles"})
        assert (job["recipe"]["epochs"], job["recipe"]["cycles"]) == (60, cycles)
        assert job["spec_hash"] == plan.sealed(job)["spec_hash"]
        # at the recipe's own epochs, the budget job is exactly the normal one
        assert plan.budget_job(c, "cnn", "all", 15, 0, run) == normal
    # metrics: every input is a prediction of the budget job behind its method
    params = expect.metrics_params(c, "cnn", "all", "snapshot+tta", 30)
    (expected,) = params["inputs"]
    assert expected["spec_hash"] == plan.budget_job(c, "cnn", "all", 30, 0, "snapshot")["spec_hash"]
    assert expected["tta"] == c["mitigation"]["tta"] and params["method"] == "snapshot+tta"
    # no epochs: the mitigation study's params, unchanged
    assert expect.metrics_params(c, "cnn", "all", "tta") == expect.metrics_params(c, "cnn", "all", "tta", None)
    assert list(plan_methods.budget_methods(c)) == [
        "plain",
        "tta",
        "snapshot",
        "snapshot+tta",
        "ema",
        "ema+tta",
        "swa",
        "swa+tta",
    ]
    # EMA and SWA are kept by the plain run (no run of their own), at every budget
    assert plan.budget_job(c, "cnn", "all", 60, 0, "plain")["recipe"]["averages"] == {
        "ema": {"decay": 0.99, "bn": "recompute"},
        "swa": {"start": 0.75},
    }
    assert "averages" not in snap["recipe"]


def test_a_list_of_tta_specs_gives_every_method():
    c = cfg.validate(with_changes(mitigation__tta=[{"name": "s1", "kind": "shift", "size": 1}, "flip"]))
    assert list(plan_methods.budget_methods(c)) == [
        "plain",
        "tta:s1",
        "tta:flip",
        "snapshot",
        "snapshot+tta:s1",
        "snapshot+tta:flip",
        "ema",
        "ema+tta:s1",
        "ema+tta:flip",
        "swa",
        "swa+tta:s1",
        "swa+tta:flip",
    ]


def job_stats(out) -> dict:
    text = (out.stdout + out.stderr).split("Job stats:")[1]
    return {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", text, re.M) if k != "total"}


@pytest.mark.slow
def test_dry_run_plans_the_study_outside_all(tmp_path):
    c = cfg.validate(DEFAULT)
    n = len(c["budget"]["models"]) * len(c["mitigation"]["conditions"]) * len(c["budget"]["epochs"])
    chunks = plan.n_chunks(c)
    out = helpers.snakemake(tmp_path, "-n", "mitigation_budget", config=DEFAULT)
    expected = {
        "dataset": 1,
        "train_budget": 2 * n * chunks,  # plain (keeping the EMA and SWA weights) and snapshot runs
        "predict_budget": 8 * n * chunks,  # plain, tta, snapshot, ema, swa, the last three with tta
        "metrics_budget": 8 * n,
        "mitigation_budget": 1,
    }
    assert job_stats(out) == expected and sum(expected.values()) == 74
    assert sum(expected.values()) - 1 <= plan.plan_size(c) - plan.plan_size(
        cfg.validate(with_changes(budget__models=[]))
    )
    planned = planned_outputs(out)
    assert "results/budget/cnn/all/e120/train/snapshot/chunk0.h5" in planned
    assert "results/budget/cnn/all/e15/predict/snapshot_tta/chunk0.h5" in planned
    assert "results/figures/mitigation_budget.png" in planned
    everything = helpers.snakemake(tmp_path, "-n", config=DEFAULT)
    assert not any("budget" in rule for rule in job_stats(everything))
    assert not any("budget" in p for p in planned_outputs(everything))
    empty = helpers.snakemake(tmp_path, "-n", "mitigation_budget", config=with_changes(budget__models=[]), check=False)
    assert empty.returncode != 0 and "config key budget.models is empty" in empty.stdout + empty.stderr


# --- one tiny study, end to end ------------------------------------------------------------------

TINY = {
    "experiment": "tiny-budget",
    "replicas": 3,
    "replicas_per_job": 3,
    "dataset": {"num_samples": 600},
    "training": {"epochs": 2, "batch_size": 64, "eval_every": 0},
    "models": {"cnn": {"arch": "cnn1d", "params": {"channels": 8}, "conditions": ["all"]}},
    "metrics": {"bootstrap_resamples": 200},
    "mitigation": {"conditions": ["all"], "snapshot_cycles": 2, "tta": {"kind": "shift", "size": 1, "stride": 1}},
    "budget": {"models": ["cnn"], "epochs": [2, 4]},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    work = tmp_path_factory.mktemp("budget")
    helpers.snakemake(work, "--cores", "2", "mitigation_budget", config=TINY)
    return work


@pytest.mark.slow
def test_tiny_study_builds_its_table_and_figure(study):
    from nondet.io.files import load_replicas, load_rows

    res = study / "results"
    for path in ("tables/mitigation_budget.md", "figures/mitigation_budget.pdf", "figures/mitigation_budget.png"):
        assert (res / path).stat().st_size > 0, path
    assert not (res / "tables/diversity.csv").exists()  # only the study and its upstream ran
    rows = list(csv.DictReader(open(res / "tables/mitigation_budget.csv")))
    methods = ["plain", "tta", "snapshot", "snapshot+tta", "ema", "ema+tta", "swa", "swa+tta"]
    assert [(r["epochs"], r["method"]) for r in rows] == [(e, m) for e in ("2", "4") for m in methods]
    assert [r["test_passes"] for r in rows] == ["1", "3", "2", "6", "1", "3", "1", "3"] * 2
    assert [r["cycles"] for r in rows] == ["1", "1", "2", "2", "1", "1", "1", "1"] * 2
    # (an SD of accuracy can be 0 by chance with 3 replicas and 120 test examples, and its change
    # against plain then undefined: only what holds on any CPU is asserted)
    numeric = [k for k in rows[0] if k not in ("model", "condition", "method", "label") and not k.endswith("_vs_plain")]
    for r in rows:
        assert all(math.isfinite(float(r[k])) for k in numeric), r
        assert r["n_replicas"] == "3" and float(r["disagreement"]) > 0  # init seeds differ
    for r in rows[::8]:  # plain: the reference of its own budget
        assert float(r["disagreement_vs_plain"]) == 0.0
    tta = rows[9]  # tta at 4 epochs, against plain at 4 epochs
    assert float(tta["disagreement_vs_plain"]) == pytest.approx(
        100 * (float(tta["disagreement"]) / float(rows[8]["disagreement"]) - 1)
    )
    # the plain row at a budget is what its metrics file says
    for epochs, r in (("2", rows[0]), ("4", rows[8])):
        (metrics,) = load_rows([res / f"budget/cnn/all/e{epochs}/metrics/plain.h5"])
        for key in ("acc_mean", "acc_sd", "acc_sd_se", "ce_mean", "ce_sd", "disagreement", "disagreement_se"):
            assert float(r[key]) == pytest.approx(metrics[key], rel=1e-12), key
        assert metrics["epochs"] == int(epochs) and metrics["method"] == "plain"
    # each trained file holds the protocol's job at its budget
    snap = load_replicas(res / "budget/cnn/all/e4/train/snapshot/chunk0.h5")
    assert snap[0]["job"]["recipe"]["epochs"] == 4 and snap[0]["job"]["recipe"]["cycles"] == 2
    assert len(snap[0]["snapshots"]) == 2
    plain = load_replicas(res / "budget/cnn/all/e4/train/plain/chunk0.h5")
    assert sorted(plain[0]["averaged"]) == ["ema", "swa"] and plain[0]["job"]["recipe"]["epochs"] == 4
    notes = (res / "tables/mitigation_budget.md").read_text()
    assert "cnn/all snapshot: disagreement vs plain" in notes


@pytest.mark.slow
def test_changing_one_budget_reruns_only_its_jobs(study):
    assert planned_outputs(helpers.snakemake(study, "-n", "mitigation_budget", config=TINY)) == set()
    changed = copy.deepcopy(TINY)
    changed["budget"]["epochs"] = [2, 6]
    planned = planned_outputs(helpers.snakemake(study, "-n", "mitigation_budget", config=changed))
    assert "results/budget/cnn/all/e6/train/plain/chunk0.h5" in planned
    assert not any("/e2/" in p for p in planned), planned
    assert len(planned) == 2 + 8 + 8 + 4  # train, predict, metrics at 6 epochs; table and figure
