"""The PyTorch Lightning example (examples/lightning.yaml: a LightningModule, a DataModule with a
2-worker DataLoader and torchvision transforms, Trainer.fit) through the real workflow, with the
pinned ``lightning`` package, shrunk for CI (Fashion-MNIST 1000/500, 1 epoch, 2 replicas): its
audit passes for every source it varies, control replicas are bitwise identical, every other
condition moves the predictions, and the Trainer's side files stay out of the working folder.
About 2 minutes on 2 CPU cores (needs `make datasets`)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import snakemake

REPO = Path(__file__).resolve().parent.parent
FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def example_config() -> dict:
    c = yaml.safe_load((REPO / "examples/lightning.yaml").read_text())
    c["models"] = {k: v for k, v in c["models"].items() if v is not None}
    c["dataset"].update(n_train=1000, n_test=500)
    c["replicas"], c["replicas_per_job"] = 2, 2
    lit = c["models"]["lit"]
    lit["pythonpath"] = str(REPO / "examples")
    lit["script"] = [str(REPO / p) for p in lit["script"]]
    lit["params"]["epochs"] = 1
    c["metrics"] = {"bootstrap_resamples": 200}
    return c


@pytest.mark.slow
def test_the_lightning_example_runs_through_the_protocol(tmp_path):
    from nondet.io.files import load_predictions

    assert FASHION.is_file(), "Debian's dataset-fashion-mnist is not installed: run `make datasets`"
    config = example_config()
    snakemake(tmp_path, "--cores", "2", config=config)
    res = tmp_path / "results"
    report = json.loads((res / "checks/lit.audit.json").read_text())
    assert report["repeatable"] and not report["problems"], report
    assert report["sources"] == {s: "honoured" for s in ("init", "shuffle", "augment", "dropout", "data")}
    rows = {r["condition"]: r for r in csv.DictReader(open(res / "tables/diversity.csv"))}
    assert set(rows) == set(config["models"]["lit"]["conditions"])
    for condition, row in rows.items():
        pred = load_predictions([res / f"predict/lit/{condition}/chunk0.h5"])
        if condition == "control":
            assert np.array_equal(pred["logits"][0], pred["logits"][1]) and float(row["disagreement"]) == 0
        else:
            assert float(row["disagreement"]) > 0, condition
    assert rows["control"]["cka_on"] == "features"
    # lightning_logs/ (the Trainer's logger) went to the jobs' scratch folders, removed on success
    assert not list(tmp_path.rglob("lightning_logs")) and not list(tmp_path.rglob(".*.work"))
