"""Training logs a person reads: no `nan%` placeholder in epochs without evaluation, an ETA on
every epoch line but the last, and jobs whose replicas all diverged named by the run's summary."""

import re

import pytest
import torch

from nondet.seeds import replica_seeds
from nondet.training.loop import format_duration
from nondet.training.recipe import Bookkeeping, TrainRun
from nondet.training.replica import train_replica
from nondet.training.vectorized import train_replicas_vectorized
from nondet.workflow.reportcheck import diverged_jobs

CPU = torch.device("cpu")


def test_epoch_lines_skip_test_accuracy_when_not_evaluated_and_carry_an_eta(small_data, recipe, cnn_spec):
    lines = []
    rec = {**recipe, "epochs": 3, "eval_every": 2}
    train_replica(
        TrainRun(cnn_spec, rec, CPU),
        replica_seeds("control", 0, 0),
        small_data,
        Bookkeeping(label="[m/c r0]", log=lines.append),
    )
    epochs = [line for line in lines if " epoch " in line]
    assert len(epochs) == 3
    assert not any("nan" in line for line in lines), lines
    # epoch 2 evaluates (eval_every 2) and so does the last; epoch 1 does not
    assert ["test_acc" in line for line in epochs] == [False, True, True], epochs
    assert [bool(re.search(r"ETA \d+s\)$", line)) for line in epochs] == [True, True, False], epochs


def test_vectorised_epoch_lines_too(small_data, recipe, cnn_spec):
    lines = []
    rec = {**recipe, "epochs": 2, "eval_every": 2}
    seeds = [replica_seeds("init", r, 0) for r in (0, 1)]
    train_replicas_vectorized(
        TrainRun(cnn_spec, rec, CPU), seeds, small_data, Bookkeeping(label="[m/c]", log=lines.append)
    )
    epochs = [line for line in lines if " epoch " in line]
    assert len(epochs) == 2 and not any("nan" in line for line in lines), lines
    assert "test_acc" not in epochs[0] and "ETA" in epochs[0]
    assert "test_acc" in epochs[1] and "ETA" not in epochs[1]


def test_format_duration():
    assert [format_duration(s) for s in (0.4, 45, 725, 11220)] == ["0s", "45s", "12m05s", "3h07m"]


def test_run_summary_names_each_all_diverged_job_once(tmp_path):
    logs = tmp_path / "logs" / "train" / "cnn"
    (logs / "all").mkdir(parents=True)
    (logs / "init").mkdir(parents=True)
    line = "[cnn/all] ALL 2 REPLICAS DIVERGED (training loss NaN/inf): this job's output holds no usable replica"
    (logs / "all" / "chunk0.log").write_text(f"epoch 1/2\n{line}\n{line}\n")
    (logs / "init" / "chunk0.log").write_text("[cnn/init] replicas [1] diverged (training loss NaN/inf)\n")
    out = diverged_jobs(tmp_path / "logs")
    assert out == [f"{logs / 'all' / 'chunk0.log'}: ALL 2 REPLICAS DIVERGED"]


@pytest.mark.slow
def test_a_training_job_whose_replicas_all_diverged_says_so_in_its_log(tmp_path):
    from nondet.workflow import config as cfg
    from nondet.workflow import plan
    from nondet.workflow.analysis_stages import dataset
    from nondet.workflow.torch_stages import train

    c = cfg.validate(
        {
            "replicas": 2,
            "replicas_per_job": 2,
            "checkpoint_every": 0,
            "dataset": {"num_samples": 300},
            "training": {"epochs": 2, "lr": 1e30, "warmup_epochs": 0},  # every replica blows up
            "models": {"linear": {"arch": "linear", "conditions": ["init"]}},
        }
    )
    data = tmp_path / "data.h5"
    dataset(str(data), plan.data_spec(c), plan.data_hash(c))
    log = tmp_path / "logs" / "train" / "linear" / "init" / "chunk0.log"
    log.parent.mkdir(parents=True)
    train(str(data), str(tmp_path / "chunk0.h5"), plan.train_job(c, "linear", "init", 0), str(log))
    text = log.read_text()
    assert "[linear/init] ALL 2 REPLICAS DIVERGED" in text, text
    assert diverged_jobs(tmp_path / "logs") == [f"{log}: ALL 2 REPLICAS DIVERGED"]
