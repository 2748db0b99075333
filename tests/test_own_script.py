"""The own-script example (examples/own_script.yaml: a plain-PyTorch script with AdamW, label
smoothing and a 2-worker DataLoader with torchvision transforms, and a command-template script
that does not import nondet) through the real workflow, shrunk for CI (Fashion-MNIST 1000/500,
1 epoch, 2 replicas; the two-recipe comparison at 2 runs per arm): its audits pass, control replicas are bitwise identical,
every source it varies moves the predictions, and editing one script's params reruns only its
jobs. About 2 minutes on 2 CPU cores (needs `make datasets`)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import planned_outputs, snakemake

pytestmark = pytest.mark.slow  # every test here starts a subprocess

REPO = Path(__file__).resolve().parent.parent
FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def example_config() -> dict:
    c = yaml.safe_load((REPO / "examples/own_script.yaml").read_text())
    c["models"] = {k: v for k, v in c["models"].items() if v is not None}
    c["dataset"].update(n_train=1000, n_test=500)
    c["replicas"], c["replicas_per_job"] = 2, 2
    own = c["models"]["myscript"]
    own["pythonpath"] = str(REPO / "examples")
    own["script"] = str(REPO / "examples/mypkg")
    own["params"]["epochs"] = 1
    own["conditions"] = ["control", "init", "shuffle", "augment", "dropout", "data", "all"]
    cmd = c["models"]["mycommand"]
    cmd["command"] = cmd["command"].replace("examples/train_cmd.py", str(REPO / "examples/train_cmd.py"))
    cmd["script"] = str(REPO / "examples/train_cmd.py")
    cmd["conditions"] = ["control", "init", "data"]
    c["comparisons"]["smoothing"]["replicas"] = 2
    c["metrics"] = {"bootstrap_resamples": 200}
    return c


CONFIG = example_config()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    assert FASHION.is_file(), "Debian's dataset-fashion-mnist is not installed: run `make datasets`"
    work = tmp_path_factory.mktemp("own_script")
    snakemake(work, "--cores", "2", config=CONFIG)
    return work


def test_audits_pass_and_every_source_moves_the_predictions(run):
    from nondet.io.files import load_predictions

    res = run / "results"
    for model in ("myscript", "mycommand"):
        report = json.loads((res / f"checks/{model}.audit.json").read_text())
        assert report["repeatable"] and not report["problems"], report
    rows = {(r["model"], r["condition"]): r for r in csv.DictReader(open(res / "tables/diversity.csv"))}
    assert set(rows) == {(m, c) for m in ("myscript", "mycommand") for c in CONFIG["models"][m]["conditions"]}
    for (model, condition), row in rows.items():
        pred = load_predictions([res / f"predict/{model}/{condition}/chunk0.h5"])
        if condition == "control":  # bitwise identical replicas
            assert np.array_equal(pred["logits"][0], pred["logits"][1]) and float(row["disagreement"]) == 0
        else:
            assert float(row["disagreement"]) > 0, (model, condition)
    assert rows[("myscript", "control")]["cka_on"] == "features"  # the script saved its features
    assert rows[("mycommand", "control")]["cka_on"] == "logits"


def test_the_two_recipes_go_through_the_verdict_engine(run):
    """The example's comparison (label smoothing 0 vs 0.1 of the script model) is trained by the
    script's arm jobs and judged by the one verdict engine, at 2 runs per arm."""
    out = run / "results/compare/smoothing"
    for arm in ("baseline", "candidate"):
        assert (out / arm / "predict_chunk0.h5").is_file(), arm
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert {r["metric"] for r in rows} >= {"accuracy", "cross_entropy"}, rows
    verdict = (out / "verdict.md").read_text()
    assert "smoothing" in verdict and "nan" not in verdict.lower(), verdict


def test_editing_one_scripts_params_reruns_only_its_jobs(run):
    edited = json.loads(json.dumps(CONFIG))
    edited["models"]["mycommand"]["params"] = {"note": "changed"}
    planned = planned_outputs(snakemake(run, "-n", config=edited))
    assert planned and all("myscript" not in p for p in planned), planned
    assert {f"results/predict/mycommand/{c}/chunk0.h5" for c in ("control", "init", "data")} <= planned
    assert "results/checks/mycommand.audit.json" in planned
