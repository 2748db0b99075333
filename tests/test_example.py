"""The worked example (examples/: a user's own CNN and Fashion-MNIST loader) through the real
workflow, on a small subset so that it runs in CI: the same outputs as the built-in models,
bitwise identical control replicas, every data-level source varies the predictions, edits of the
user model's params rerun only its jobs, and a broken user model stops before any training. The
shared run is also examples/config.yaml's smoke run: every rule of its full DAG runs
(tests/test_config_dags.py leaves this config to this file, its RUN_ELSEWHERE)."""

import copy
import csv
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import planned_outputs, snakemake
from test_config_dags import check_covers_reduction, check_every_rule_ran, run_targets

pytestmark = pytest.mark.slow  # every test here starts a subprocess

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = str(REPO / "examples")
DAG_CONFIG = REPO / "examples/config.yaml"
DAG_CONFIGS = (DAG_CONFIG,)  # tests/test_config_dags.py RUN_ELSEWHERE


def example_config() -> dict:
    """examples/config.yaml, shrunk (data subset, 3 replicas, 2 epochs, narrower CNN), plus the
    built-in linear model beside the user's for the rerun test. Its conditions keep every kind the
    full config trains (tests/test_config_dags.py's condition_kind): control, seeds, dropout and
    bitflip (the user model's flipped tensor)."""
    c = yaml.safe_load(DAG_CONFIG.read_text())
    c["models"] = {k: v for k, v in c["models"].items() if v is not None}
    c["dataset"]["pythonpath"] = EXAMPLES
    c["dataset"]["args"] = {"n_train": 1500, "n_test": 500}
    c["replicas"], c["replicas_per_job"] = 3, 3
    c["training"].update(epochs=2, eval_every=1)
    user = c["models"]["mycnn"]
    user.update(
        pythonpath=EXAMPLES,
        params={"channels": 8, "dropout": 0.2},
        conditions=["control", "init", "shuffle", "augment", "dropout", "bitflip"],
    )
    c["models"]["linear"] = {"arch": "linear", "conditions": ["control", "init"]}
    c["metrics"] = {"bootstrap_resamples": 200}
    return c


CONFIG = example_config()


@pytest.fixture(scope="module")
def example_snakemake(tmp_path_factory):
    """The shared run and its report: its folder and the run's Snakemake output."""
    work = tmp_path_factory.mktemp("example")
    out = snakemake(work, "--cores", "2", *run_targets(DAG_CONFIG), config=CONFIG)
    snakemake(work, "--report", "results/report.html", config=CONFIG)
    return work, out


@pytest.fixture(scope="module")
def example_run(example_snakemake):
    return example_snakemake[0]


def test_every_rule_of_the_examples_config_runs(example_snakemake, tmp_path):
    """The run planned exactly the rules of examples/config.yaml's full DAG and ran each, and it
    trains every kind that the file's reduction in tests/test_config_dags.py would."""
    check_every_rule_ran(DAG_CONFIG, example_snakemake[1], tmp_path)
    check_covers_reduction(DAG_CONFIG, CONFIG, tmp_path / "stand-in")


def test_example_runs_end_to_end(example_run):
    from nondet.io.files import load_replicas
    from nondet.workflow.torch_stages import same_weights

    res = example_run / "results"
    for path in (
        "tables/diversity.csv",
        "tables/diversity.md",
        "tables/provenance.csv",
        "figures/diversity_mycnn.pdf",
        "figures/diversity_mycnn.png",
        "figures/diversity_linear.png",
        "checks/mycnn.json",
        "report.html",
    ):
        assert (res / path).stat().st_size > 0, path
    rows = {(r["model"], r["condition"]): r for r in csv.DictReader(open(res / "tables/diversity.csv"))}
    assert set(rows) == {("mycnn", c) for c in CONFIG["models"]["mycnn"]["conditions"]} | {
        ("linear", "control"),
        ("linear", "init"),
    }
    # control: bitwise identical replicas of the user's model (weights and logits)
    control = load_replicas(res / "train/mycnn/control/chunk0.h5")
    assert len(control) == 3 and all(same_weights(r["weights"], control[0]["weights"]) for r in control)
    assert float(rows[("mycnn", "control")]["disagreement"]) == 0.0
    # every data-level source on its own changes predictions (bitflip and kernels are left out:
    # whether their effect survives depends on this CPU's rounding)
    for source in ("init", "shuffle", "augment", "dropout"):
        assert float(rows[("mycnn", source)]["disagreement"]) > 0.0, source
    assert {rows[("mycnn", c)]["cka_on"] for c in CONFIG["models"]["mycnn"]["conditions"]} == {"features"}
    assert rows[("linear", "init")]["cka_on"] == "logits"
    check = yaml.safe_load((res / "checks/mycnn.json").read_text())
    assert check["dropout_layers"] == 1 and check["input_shape"] == [1, 28, 28] and check["num_classes"] == 10
    # the user's nn.Dropout really ran with masks keyed by the dropout seed: the dropout
    # condition's replicas share their initial weights (init seed) yet end apart
    dropout = load_replicas(res / "train/mycnn/dropout/chunk0.h5")
    assert len({r["seeds"]["dropout"] for r in dropout}) == 3
    assert len({r["seeds"]["init"] for r in dropout}) == 1
    assert not same_weights(dropout[0]["weights"], dropout[1]["weights"])
    html = (res / "report.html").read_text(errors="replace")
    assert "diversity.csv" in html and "diversity_mycnn.png" in html


def test_editing_the_user_models_params_reruns_only_its_jobs(example_run):
    assert planned_outputs(snakemake(example_run, "-n", config=CONFIG)) == set()
    changed = copy.deepcopy(CONFIG)
    changed["models"]["mycnn"]["params"]["channels"] = 12
    planned = planned_outputs(snakemake(example_run, "-n", config=changed))
    conditions = CONFIG["models"]["mycnn"]["conditions"]
    assert planned == {
        "results/checks/mycnn.json",
        *(f"results/{stage}/mycnn/{c}/chunk0.h5" for stage in ("train", "predict") for c in conditions),
        *(f"results/metrics/mycnn/{c}.h5" for c in conditions),
        "results/tables/diversity.csv",
        "results/tables/diversity.md",
        "results/figures/diversity_mycnn.pdf",
        "results/figures/diversity_mycnn.png",
        "results/tables/provenance.csv",  # records the whole config
        "results/report/overview.html",  # the report's pages follow the table
        "results/report/table_diversity.html",
    }


def test_broken_user_model_stops_before_any_training(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/brokenmodels.py").write_text(
        "from torch import nn\n\n"
        "def build(input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes + 2))\n"
    )
    bad = copy.deepcopy(CONFIG)
    bad["dataset"]["args"] = {"n_train": 100, "n_test": 50}
    bad["models"] = {
        "broken": {"arch": "brokenmodels:build", "pythonpath": str(tmp_path / "pkg"), "conditions": ["control", "init"]}
    }
    out = snakemake(tmp_path, "--cores", "1", config=bad, check=False)
    assert out.returncode != 0
    log = (tmp_path / "logs/checks/broken.log").read_text()
    assert "model broken (brokenmodels:build): forward returned (2, 12) for a batch of 2; expected" in log
    assert not (tmp_path / "results/train").exists()


def test_missing_user_module_fails_at_planning(tmp_path):
    bad = copy.deepcopy(CONFIG)
    bad["models"]["mycnn"]["arch"] = "mypkgg.models:build"  # a typo
    out = snakemake(tmp_path, "-n", config=bad, check=False)
    assert out.returncode != 0
    assert "models.mycnn.arch: model 'mycnn': module 'mypkgg'" in out.stdout + out.stderr
    assert not (tmp_path / "results").exists()


def test_example_loader_matches_the_pipelines_fashion_mnist_reader():
    """The example's own idx reader and nondet's MD5-checked one agree on Debian's files."""
    import sys

    sys.path.insert(0, EXAMPLES)
    try:
        from mypkg.data import load
    finally:
        sys.path.remove(EXAMPLES)
    from nondet.io.datasets import make_dataset_arrays

    ours = make_dataset_arrays({"name": "fashion_mnist"}, log=lambda *_: None)
    x_train, y_train, x_test, y_test = load(n_train=300, n_test=200)
    assert np.array_equal(x_train, ours["x_train"][:300]) and np.array_equal(y_test, ours["y_test"][:200])
