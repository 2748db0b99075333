"""Nothing lost, nothing silent: kill-and-resume, atomic outputs, divergence, bad inputs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from nondet import config as cfg
from nondet import stages
from nondet.h5io import InputError, OutputError, atomic_h5

REPO = Path(__file__).resolve().parent.parent


def make_config(**training):
    return cfg.validate(
        {
            "replicas": 2,
            "replicas_per_job": 2,
            "dataset": {"num_samples": 5000},
            "training": {"epochs": 12, "eval_every": 0, **training},
            "models": {"cnn": {"arch": "cnn1d", "conditions": ["all", "control"]}},
            "metrics": {"bootstrap_resamples": 50},
        }
    )


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    c = make_config()
    path = tmp_path_factory.mktemp("data") / "mnist1d.h5"
    stages.make_dataset(path, cfg.data_spec(c), cfg.data_hash(c))
    return path, c


def read_weights(path):
    return {r["replica"]: r["weights"] for r in stages.load_replicas(path)}


def test_sigkill_mid_training_then_resume_is_bitwise_identical(tmp_path, data_file):
    data, c = data_file
    job = cfg.train_job(c, "cnn", "all", 0)
    out = tmp_path / "train" / "chunk0.h5"
    log = tmp_path / "train.log"
    code = (
        "import json, sys, torch; from nondet.stages import train; "
        "train(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], 1, 1)"
    )
    cmd = [sys.executable, "-c", code, str(data), str(out), json.dumps(job), str(log)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ckpt = stages.checkpoint_dir(out) / "replica_0000.pt"
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ckpt.exists():  # first checkpoint written: training is under way
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    time.sleep(0.3)  # a few more epochs
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # nothing that looks finished
    assert [p.name for p in out.parent.iterdir() if not p.name.startswith(".")] == []
    import torch

    epoch_at_kill = torch.load(ckpt, weights_only=False)["epoch"]
    assert 1 <= epoch_at_kill < 12

    subprocess.run(cmd, env=env, check=True, timeout=300, stderr=subprocess.DEVNULL)
    assert "resuming from checkpoint" in log.read_text()
    assert not stages.checkpoint_dir(out).exists()  # cleaned up once the output is complete

    reference = tmp_path / "reference.h5"
    stages.train(data, reference, job, checkpoint_every=0)
    resumed, straight = read_weights(out), read_weights(reference)
    assert resumed.keys() == straight.keys() == {0, 1}
    for r in resumed:
        for name in straight[r]:
            assert np.array_equal(resumed[r][name], straight[r][name]), (r, name)


def test_diverged_runs_are_recorded_and_excluded_or_fail(tmp_path, data_file):
    data, _ = data_file
    c = make_config(epochs=2)
    c["replicas"] = 3
    c["replicas_per_job"] = 3
    job = cfg.train_job(c, "cnn", "all", 0)
    job["recipe"]["lr"] = 1e6  # blows up: loss becomes NaN
    job["data_hash"] = cfg.data_hash(make_config())
    fine = {**job, "recipe": {**job["recipe"], "lr": 0.2}}
    stages.train(data, tmp_path / "bad.h5", job, checkpoint_every=0)
    assert all(r["diverged"] for r in stages.load_replicas(tmp_path / "bad.h5"))
    stages.predict(data, tmp_path / "bad.h5", tmp_path / "bad_pred.h5", job)
    stages.train(data, tmp_path / "ok.h5", fine, checkpoint_every=0)
    stages.predict(data, tmp_path / "ok.h5", tmp_path / "ok_pred.h5", fine)
    params = {"model": "cnn", "condition": "all", "bootstrap_resamples": 20, "seed": 0}
    paths = [tmp_path / "ok_pred.h5", tmp_path / "bad_pred.h5"]
    stages.metrics(paths, tmp_path / "m.h5", {**params, "on_diverged": "exclude"})
    row = stages.load_rows([tmp_path / "m.h5"])[0]
    assert row["n_diverged"] == 3 and row["n_replicas"] == 3
    assert np.isfinite(row["disagreement"])
    with pytest.raises(InputError, match=r"3 replica\(s\) diverged"):
        stages.metrics(paths, tmp_path / "m2.h5", {**params, "on_diverged": "fail"})
    assert not (tmp_path / "m2.h5").exists()
    with pytest.raises(InputError, match="need >= 2 replicas that did not diverge"):
        stages.metrics([tmp_path / "bad_pred.h5"], tmp_path / "m3.h5", params)


# --- bad inputs, each with a message that names the problem (config cases: test_config.py) ---


def test_missing_dataset(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        stages.load_dataset(tmp_path / "nope.h5", "abc")


def test_dataset_from_another_config(data_file):
    data, _ = data_file
    with pytest.raises(InputError, match="different dataset config"):
        stages.load_dataset(data, "0123456789abcdef")


def test_corrupt_training_file(tmp_path):
    bad = tmp_path / "chunk0.h5"
    bad.write_bytes(b"\x89HDF\r\n garbage")
    with pytest.raises(InputError, match="not a readable HDF5"):
        stages.load_replicas(bad)


def test_training_file_from_another_job(tmp_path, data_file):
    data, c = data_file
    job = cfg.train_job(make_config(epochs=1), "cnn", "control", 0)
    stages.train(data, tmp_path / "t.h5", job, checkpoint_every=0)
    other = cfg.train_job(make_config(epochs=2), "cnn", "control", 0)
    with pytest.raises(InputError, match="different job spec"):
        stages.predict(data, tmp_path / "t.h5", tmp_path / "p.h5", other)
    with pytest.raises(InputError, match="no snapshots"):
        stages.predict(data, tmp_path / "t.h5", tmp_path / "p.h5", job, method="snapshot")


def test_predictions_with_wrong_shapes_or_other_experiment(tmp_path):
    def write(name, labels, data_hash="h"):
        with atomic_h5(tmp_path / name, {"kind": "predict", "data_hash": data_hash, "job": {}}) as f:
            f.create_dataset("logits", data=np.zeros((2, len(labels), 3), np.float32))
            f.create_dataset("features", data=np.zeros((2, len(labels), 4), np.float32))
            f.create_dataset("labels", data=labels)
            f.create_dataset("replicas", data=[0, 1])
            f.create_dataset("diverged", data=[False, False])
            f.attrs["kernels_mode"] = "deterministic"
        return tmp_path / name

    a, b = write("a.h5", np.arange(5)), write("b.h5", np.arange(6))
    with pytest.raises(InputError, match="different test set"):
        stages.load_predictions([a, b])
    c = write("c.h5", np.arange(5), data_hash="other")
    with pytest.raises(InputError, match="different experiments"):
        stages.load_predictions([a, c])
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(InputError, match="no provenance"):
        stages.load_predictions([tmp_path / "plain.h5"])


def test_gpu_requested_but_absent():
    import torch

    from nondet.training import resolve_device

    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(RuntimeError, match="no CUDA GPU is visible"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_output_directory_not_writable(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(OutputError, match="not writable"):
        with atomic_h5(blocker / "train" / "x.h5", {"kind": "train"}):
            pass
