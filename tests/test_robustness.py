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

from nondet.io import files
from nondet.io.h5io import CODE_VERSION, InputError, OutputError, atomic_h5
from nondet.training.data import load_dataset
from nondet.training.recipe import Bookkeeping, TrainRun
from nondet.workflow import analysis_stages, expect, plan, torch_stages
from nondet.workflow import config as cfg

REPO = Path(__file__).resolve().parent.parent


def make_config(**training):
    # one replica after another (vectorize off): these tests are about the per-replica
    # checkpoints of sequential training; tests/test_vectorized.py kills and resumes the others
    return cfg.validate(
        {
            "replicas": 2,
            "replicas_per_job": 2,
            "vectorize": "off",
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
    analysis_stages.dataset(path, plan.data_spec(c), plan.data_hash(c))
    return path, c


def read_weights(path):
    return {r["replica"]: r["weights"] for r in files.load_replicas(path)}


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_is_bitwise_identical(tmp_path, data_file):
    data, c = data_file
    job = plan.train_job(c, "cnn", "all", 0)
    out = tmp_path / "train" / "chunk0.h5"
    log = tmp_path / "train.log"
    code = (
        "import json, sys, torch; from nondet.workflow.torch_stages import train; "
        "train(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], 1, 1)"
    )
    cmd = [sys.executable, "-c", code, str(data), str(out), json.dumps(job), str(log)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ckpt = files.checkpoint_dir(out) / "replica_0000.pt"
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
    assert not files.checkpoint_dir(out).exists()  # cleaned up once the output is complete

    reference = tmp_path / "reference.h5"
    torch_stages.train(data, reference, job, checkpoint_every=0)
    resumed, straight = read_weights(out), read_weights(reference)
    assert resumed.keys() == straight.keys() == {0, 1}
    for r in resumed:
        for name in straight[r]:
            assert np.array_equal(resumed[r][name], straight[r][name]), (r, name)


@pytest.mark.slow
def test_diverged_runs_are_recorded_and_excluded_or_fail(tmp_path, data_file):
    data, _ = data_file
    c = make_config(epochs=2)
    c["replicas"] = 3
    c["replicas_per_job"] = 3
    job = plan.train_job(c, "cnn", "all", 0)
    job["recipe"]["lr"] = 1e6  # blows up: loss becomes NaN
    job["data_hash"] = plan.data_hash(make_config())
    fine = {**job, "recipe": {**job["recipe"], "lr": 0.2}}
    torch_stages.train(data, tmp_path / "bad.h5", job, checkpoint_every=0)
    assert all(r["diverged"] for r in files.load_replicas(tmp_path / "bad.h5"))
    torch_stages.predict(data, tmp_path / "bad.h5", tmp_path / "bad_pred.h5", job)
    torch_stages.train(data, tmp_path / "ok.h5", fine, checkpoint_every=0)
    torch_stages.predict(data, tmp_path / "ok.h5", tmp_path / "ok_pred.h5", fine)
    params = {"model": "cnn", "condition": "all", "bootstrap_resamples": 20, "seed": 0}
    paths = [tmp_path / "ok_pred.h5", tmp_path / "bad_pred.h5"]
    analysis_stages.metrics(paths, tmp_path / "m.h5", {**params, "on_diverged": "exclude"})
    row = files.load_rows([tmp_path / "m.h5"])[0]
    assert row["n_diverged"] == 3 and row["n_replicas"] == 3
    assert np.isfinite(row["disagreement"])
    with pytest.raises(InputError, match=r"3 replica\(s\) diverged"):
        analysis_stages.metrics(paths, tmp_path / "m2.h5", {**params, "on_diverged": "fail"})
    assert not (tmp_path / "m2.h5").exists()
    with pytest.raises(InputError, match="need >= 2 replicas that did not diverge"):
        analysis_stages.metrics([tmp_path / "bad_pred.h5"], tmp_path / "m3.h5", {**params, "on_diverged": "exclude"})


# --- bad inputs, each with a message that names the problem (config cases: test_config.py) ---


def test_missing_dataset(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_dataset(tmp_path / "nope.h5", "abc")


@pytest.mark.slow
def test_dataset_from_another_config(data_file):
    data, _ = data_file
    with pytest.raises(InputError, match="different dataset config"):
        load_dataset(data, "0123456789abcdef")


def test_corrupt_training_file(tmp_path):
    bad = tmp_path / "chunk0.h5"
    bad.write_bytes(b"\x89HDF\r\n garbage")
    with pytest.raises(InputError, match="not a readable HDF5"):
        files.load_replicas(bad)


@pytest.mark.slow
def test_training_file_from_another_job(tmp_path, data_file):
    data, c = data_file
    job = plan.train_job(make_config(epochs=1), "cnn", "control", 0)
    torch_stages.train(data, tmp_path / "t.h5", job, checkpoint_every=0)
    other = plan.train_job(make_config(epochs=2), "cnn", "control", 0)
    with pytest.raises(InputError, match="not made by the job this run expects"):
        torch_stages.predict(data, tmp_path / "t.h5", tmp_path / "p.h5", other)
    with pytest.raises(InputError, match="no snapshots"):
        torch_stages.predict(data, tmp_path / "t.h5", tmp_path / "p.h5", job, method="snapshot")


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
        files.load_predictions([a, b])
    c = write("c.h5", np.arange(5), data_hash="other")
    with pytest.raises(InputError, match="different experiments"):
        files.load_predictions([a, c])
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(InputError, match="no provenance"):
        files.load_predictions([tmp_path / "plain.h5"])


def test_gpu_requested_but_absent():
    import torch

    from nondet.training.replica import resolve_device

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


# --- provenance at every stage, whole-job checkpoint keys, clear faults ---------------


def small_config(lr=0.2, data_seed=42, **training):
    return cfg.validate(
        {
            "replicas": 2,
            "replicas_per_job": 2,
            "vectorize": "off",  # the tests replace torch_stages.train_replica (sequential path)
            "dataset": {"num_samples": 600, "seed": data_seed},
            "training": {"epochs": 1, "batch_size": 64, "eval_every": 0, "lr": lr, **training},
            "models": {"cnn": {"arch": "cnn1d", "params": {"channels": 4}, "conditions": ["control"]}},
            "metrics": {"bootstrap_resamples": 20},
        }
    )


def dataset_of(c, folder):
    path = folder / f"data_{plan.data_hash(c)}.h5"
    if not path.exists():
        analysis_stages.dataset(path, plan.data_spec(c), plan.data_hash(c))
    return path


@pytest.mark.slow
def test_files_copied_from_another_experiment_are_refused_by_every_reader(tmp_path):
    """Item 1: a predictions or metrics file of an lr-0.1 run copied over an lr-0.2 run's path."""
    old, new = small_config(lr=0.1), small_config(lr=0.2)
    data = dataset_of(old, tmp_path)
    job = plan.train_job(old, "cnn", "control", 0)
    torch_stages.train(data, tmp_path / "t.h5", job, checkpoint_every=0)
    pred = tmp_path / "results" / "predict" / "cnn" / "control" / "chunk0.h5"
    torch_stages.predict(data, tmp_path / "t.h5", pred, job)
    # the reader of predictions (metrics) checks the spec of each file it is given
    analysis_stages.metrics([pred], tmp_path / "m_old.h5", expect.metrics_params(old, "cnn", "control"))
    with pytest.raises(InputError) as err:
        analysis_stages.metrics([pred], tmp_path / "m_new.h5", expect.metrics_params(new, "cnn", "control"))
    assert str(pred) in str(err.value) and "spec_hash" in str(err.value)
    assert "--forcerun" in str(err.value)
    assert not (tmp_path / "m_new.h5").exists()
    # ... and the readers of metric files (tables, figures) check theirs
    metric = str(tmp_path / "m_old.h5")
    with pytest.raises(InputError, match="spec_hash"):
        analysis_stages.diversity_table(
            [metric],
            tmp_path / "d.csv",
            tmp_path / "d.md",
            expect={metric: expect.metrics_expect(new, "cnn", "control")},
        )
    with pytest.raises(InputError, match="m_old.h5"):
        files.load_rows([metric], [expect.metrics_expect(new, "cnn", "control")])
    assert not (tmp_path / "d.csv").exists()
    analysis_stages.diversity_table(
        [metric], tmp_path / "d.csv", tmp_path / "d.md", expect={metric: expect.metrics_expect(old, "cnn", "control")}
    )
    assert (tmp_path / "d.csv").exists()
    # a training file of another data set or code version is refused by predict, naming what differs
    other = {**job, "data_hash": "0" * 16}
    with pytest.raises(InputError, match="data_hash"):
        files.load_replicas(tmp_path / "t.h5", files.job_expect(other))
    with pytest.raises(InputError, match=f"code_version: the file has '{CODE_VERSION}'"):
        files.load_replicas(tmp_path / "t.h5", {**files.job_expect(job), "code_version": "99"})


@pytest.mark.slow
def test_checkpoints_of_another_data_set_are_not_resumed(tmp_path, monkeypatch):
    """Item 2: kill a job mid-run, change dataset.seed, rerun: it must not resume old weights."""
    from nondet.training import replica as training

    c_old, c_new = small_config(epochs=2), small_config(epochs=2, data_seed=43)
    data_old, data_new = dataset_of(c_old, tmp_path), dataset_of(c_new, tmp_path)
    job_old, job_new = plan.train_job(c_old, "cnn", "control", 0), plan.train_job(c_new, "cnn", "control", 0)
    assert {k: v for k, v in job_old.items() if k not in ("data_hash", "spec_hash")} == {
        k: v for k, v in job_new.items() if k not in ("data_hash", "spec_hash")
    }  # same seeds, recipe and model: only the data differ
    out = tmp_path / "train" / "chunk0.h5"
    real, calls = training.train_replica, []

    def dies_on_second_replica(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # like a kill: replica 0's checkpoint stays behind
        return real(*args, **kwargs)

    monkeypatch.setattr(torch_stages, "train_replica", dies_on_second_replica)
    with pytest.raises(KeyboardInterrupt):
        torch_stages.train(data_old, out, job_old, checkpoint_every=1)
    assert (files.checkpoint_dir(out) / "replica_0000.pt").exists()
    monkeypatch.setattr(torch_stages, "train_replica", real)

    log = tmp_path / "train.log"
    torch_stages.train(data_new, out, job_new, log_path=log, checkpoint_every=1)
    text = log.read_text()
    assert "ignoring the checkpoints" in text and "data_hash" in text
    assert "resuming" not in text
    torch_stages.train(data_new, tmp_path / "straight.h5", job_new, checkpoint_every=0)
    resumed, straight = read_weights(out), read_weights(tmp_path / "straight.h5")
    for r in straight:
        for name in straight[r]:
            assert np.array_equal(resumed[r][name], straight[r][name]), (r, name)


def test_truncated_predictions_name_the_file_and_how_to_recover(tmp_path):
    """Item 5: h5py's bare 'truncated file: eof = ...' hid the path."""
    pred = tmp_path / "results" / "predict" / "chunk0.h5"
    with atomic_h5(pred, {"kind": "predict", "data_hash": "h", "job": {}}) as f:
        f.create_dataset("logits", data=np.zeros((2, 500, 10), np.float32))
    size = pred.stat().st_size
    with open(pred, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(InputError) as err:
        files.load_predictions([pred])
    assert str(pred) in str(err.value) and f"--forcerun {pred}" in str(err.value)


@pytest.mark.parametrize(
    "error", [OSError(28, "No space left on device"), RuntimeError("basic_ios::clear: iostream error")]
)
def test_full_disk_while_checkpointing_is_clear_and_leaves_no_temporary_file(
    tmp_path, monkeypatch, small_data, recipe, cnn_spec, error
):
    """Item 5: torch.save failing mid-write (ENOSPC) must not leave .pt.tmp-* files."""
    import torch

    from nondet.seeds import replica_seeds
    from nondet.training import replica as training

    def full_disk(obj, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise error

    monkeypatch.setattr(torch, "save", full_disk)
    ckpt = tmp_path / "ckpt" / "replica_0000.pt"
    ckpt.parent.mkdir()
    with pytest.raises(OutputError) as err:
        training.train_replica(
            TrainRun(cnn_spec, {**recipe, "epochs": 1}, torch.device("cpu")),
            replica_seeds("control", 0, 0),
            small_data,
            Bookkeeping(checkpoint=ckpt, checkpoint_every=1),
        )
    assert str(ckpt) in str(err.value) and "free" in str(err.value)
    assert list(ckpt.parent.iterdir()) == []


@pytest.mark.slow
def test_failure_appends_the_traceback_once_to_the_jobs_log(tmp_path, monkeypatch):
    """Item 6: the log was reopened in write mode on failure, erasing it, and got two tracebacks."""

    c = small_config()
    data = dataset_of(c, tmp_path)

    def boom(*args, **kwargs):
        raise RuntimeError("boom in replica")

    monkeypatch.setattr(torch_stages, "train_replica", boom)
    log = tmp_path / "logs" / "train.log"
    with pytest.raises(RuntimeError, match="boom in replica"):
        torch_stages.train(data, tmp_path / "t.h5", plan.train_job(c, "cnn", "control", 0), log_path=log)
    text = log.read_text()
    assert "training cnn/control replicas [0, 1]" in text  # the header survived
    assert text.count("Traceback") == 1 and text.count("train failed") == 1
    assert text.index("training cnn/control") < text.index("train failed")


@pytest.mark.slow
def test_workflow_refuses_a_copied_prediction_and_forcerun_recovers(tiny_run, tmp_path):
    """Item 1 end to end: a predictions chunk of another job (cnn/dropout) copied over a chunk's path
    (cnn/all) used to give a diversity table mixing both, exit 0. Now the metrics job fails naming
    the file, and the advised --forcerun restores exactly the table of the finished run. On a
    copy of the session's shared TINY run (tests/shared_run.py), which stays untouched."""
    import shutil

    import helpers
    from shared_run import TINY, copy_run

    def run(*args):
        return helpers.snakemake(work, "--cores", "1", *args, "results/tables/diversity.csv", config=TINY, check=False)

    work = copy_run(tiny_run, tmp_path / "run")
    table = (work / "results/tables/diversity.csv").read_text()
    assert helpers.planned_outputs(helpers.snakemake(work, "-n", config=TINY)) == set()  # the copy is finished
    chunk = "results/predict/cnn/all/chunk0.h5"
    shutil.copy(work / "results/predict/cnn/dropout/chunk0.h5", work / chunk)
    out = run()
    assert out.returncode != 0
    assert f"input file {chunk} was not made by the job this run expects" in out.stderr
    assert (work / "results/tables/diversity.csv").read_text() == table  # nothing mixed was written
    assert run("--forcerun", chunk).returncode == 0
    assert (work / "results/tables/diversity.csv").read_text() == table


def test_a_damaged_checkpoint_is_ignored_with_a_reason(tmp_path, small_data, recipe, cnn_spec):
    import torch

    from nondet.seeds import replica_seeds
    from nondet.training import replica as training

    ckpt = tmp_path / "replica_0000.pt"
    ckpt.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    lines = []
    seeds = replica_seeds("control", 0, 0)
    res = training.train_replica(
        TrainRun(cnn_spec, {**recipe, "epochs": 1}, torch.device("cpu")),
        seeds,
        small_data,
        Bookkeeping(log=lines.append, checkpoint=ckpt, checkpoint_every=1),
    )
    assert any("ignoring checkpoint" in line and "cannot be read" in line for line in lines)
    straight = training.train_replica(
        TrainRun(cnn_spec, {**recipe, "epochs": 1}, torch.device("cpu")),
        seeds,
        small_data,
        Bookkeeping(log=lambda _: None),
    )
    for name in straight["state"]:
        assert np.array_equal(res["state"][name], straight["state"][name])


def test_a_checkpoint_from_other_hardware_is_not_resumed(tmp_path, small_data, recipe, cnn_spec, monkeypatch):
    """A run resumed on another GPU type (or moved between CPU and GPU) would round differently
    from its first part: the checkpoint's key names the accelerator, so it is ignored, with why."""
    import torch

    from nondet.seeds import replica_seeds
    from nondet.training import replica as training

    ckpt, seeds, cpu = tmp_path / "replica_0000.pt", replica_seeds("control", 0, 0), torch.device("cpu")
    first = training.train_replica(
        TrainRun(cnn_spec, {**recipe, "epochs": 1}, cpu),
        seeds,
        small_data,
        Bookkeeping(log=lambda _: None, checkpoint=ckpt, checkpoint_every=1),
    )
    assert ckpt.exists()
    lines = []
    training.train_replica(
        TrainRun(cnn_spec, {**recipe, "epochs": 1}, cpu),
        seeds,
        small_data,
        Bookkeeping(log=lines.append, checkpoint=ckpt, checkpoint_every=1),
    )
    assert not any("ignoring checkpoint" in line for line in lines)  # same hardware: resumed
    monkeypatch.setattr(training, "accelerator_name", lambda device: "NVIDIA H200")
    again = training.train_replica(
        TrainRun(cnn_spec, {**recipe, "epochs": 1}, cpu),
        seeds,
        small_data,
        Bookkeeping(log=lines.append, checkpoint=ckpt, checkpoint_every=1),
    )
    assert any("ignoring checkpoint" in line and "accelerator" in line for line in lines)
    for name in first["state"]:  # trained again from the start, on the same CPU: the same bits
        assert np.array_equal(again["state"][name], first["state"][name])


# --- issue 32: the unclear cases, each one message naming the file or key and the fix ----------


def _arrays(rng, n=40):
    return {
        "x_train": rng.normal(size=(n, 1, 8)).astype(np.float32),
        "y_train": np.arange(n) % 3,
        "x_test": rng.normal(size=(10, 1, 8)).astype(np.float32),
        "y_test": np.arange(10) % 3,
    }


def test_an_object_array_in_an_arrays_npz_names_the_file_and_key(tmp_path):
    from nondet.io.checksums import DataError
    from nondet.io.datasets import make_dataset_arrays

    arrays = _arrays(np.random.default_rng(0))
    labels = np.empty(40, dtype=object)
    labels[:] = [int(v) for v in arrays["y_train"]]
    path = tmp_path / "mine.npz"
    np.savez(path, **{**arrays, "y_train": labels}, allow_pickle=True)
    with pytest.raises(DataError) as e:
        make_dataset_arrays({"name": "arrays", "path": str(path)})
    text = str(e.value)
    assert f"{path}: array 'y_train' holds Python objects" in text and "np.savez(" in text
    assert "allow_pickle=True" not in text


def test_a_resampling_too_small_to_train_is_refused_at_config_time():
    base = {
        "dataset": {"num_samples": 600},
        "models": {"cnn": {"arch": "cnn1d", "conditions": ["data"]}},
        "divergence": {"models": []},
        "stability": {"models": []},
        "mitigation": {"models": []},
    }
    with pytest.raises(cfg.ConfigError, match=r"data_resampling.fraction: 1e-09 of the 480 training examples leaves 1"):
        cfg.validate({**base, "data_resampling": {"fraction": 1.0e-9}})
    cfg.validate({**base, "data_resampling": {"fraction": 0.01}})  # 5 examples: allowed
    # no condition varies data: the key is not used, so not refused
    cfg.validate(
        {**base, "models": {"cnn": {"arch": "cnn1d", "conditions": ["init"]}}, "data_resampling": {"fraction": 1e-9}}
    )


@pytest.mark.slow
def test_an_arrays_file_rewritten_after_the_data_set_was_made_is_named_as_rewritten(tmp_path):
    from nondet.io.datasets import dataset_hash

    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(path, **_arrays(rng))
    spec = {"name": "arrays", "path": str(path)}
    data = tmp_path / "arrays.h5"
    analysis_stages.dataset(data, spec, dataset_hash(spec))
    np.savez(path, **_arrays(rng))  # rewritten while a run uses it
    with pytest.raises(InputError, match=rf"dataset.path {path} was rewritten after the data set {data} was made"):
        load_dataset(data, dataset_hash(spec))
    with pytest.raises(InputError, match="made from a different dataset config"):
        load_dataset(data, "0" * 16)  # another config section: the old message
