"""Nothing silently wrong with the researcher's own files (issue 24): data sets identified by
their contents, checkpoints read without running pickled code, reports from one config,
imported probabilities, replicas missing from a file. Small: about a minute in all on 2 cores."""

import json
import textwrap

import numpy as np
import pytest

from nondet.io import files
from nondet.io.formats import make_mnist1d
from nondet.io.h5io import InputError
from nondet.training import loop
from nondet.training import replica as training
from nondet.training.data import load_dataset
from nondet.training.recipe import Bookkeeping, TrainRun
from nondet.workflow import analysis_stages, expect, plan, torch_stages
from nondet.workflow import config as cfg


def arrays_config(path, **training_):
    return cfg.validate(
        {
            "replicas": 2,
            "replicas_per_job": 2,
            "vectorize": "off",  # the tests replace torch_stages.train_replica (sequential path)
            "dataset": {"name": "arrays", "path": str(path)},
            "training": {"epochs": 2, "batch_size": 64, "eval_every": 0, **training_},
            "models": {"cnn": {"arch": "cnn1d", "params": {"channels": 4}, "conditions": ["control"]}},
            "metrics": {"bootstrap_resamples": 20},
        }
    )


def write_npz(path, seed):
    np.savez(path, **make_mnist1d(seed=seed, num_samples=400))


def read_weights(path):
    return {r["replica"]: r["weights"] for r in files.load_replicas(path)}


def assert_bitwise(a, b):
    assert a.keys() == b.keys()
    for r in a:
        for name in a[r]:
            assert np.array_equal(a[r][name], b[r][name]), (r, name)


def kill_on_second_replica(monkeypatch, run):
    """Run ``run()`` with training interrupted at its second replica (the first one's checkpoint
    stays behind, as after a kill)."""
    real, calls = training.train_replica, []

    def dies(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(torch_stages, "train_replica", dies)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(torch_stages, "train_replica", real)


@pytest.mark.slow
def test_arrays_file_regenerated_at_the_same_path_after_a_kill(tmp_path, monkeypatch):
    """Issue 24, item 1: kill, regenerate my.npz with other contents, rerun. The data hash used
    to be that of the path: training resumed the old-data checkpoint and a prediction made from
    the old contents passed every check."""
    npz = tmp_path / "my.npz"
    write_npz(npz, seed=1)
    c_old = arrays_config(npz)
    data = tmp_path / "results" / "data" / "arrays.h5"
    analysis_stages.dataset(data, plan.data_spec(c_old), plan.data_hash(c_old))
    job_old = plan.train_job(c_old, "cnn", "control", 0)
    torch_stages.train(data, tmp_path / "old.h5", job_old, checkpoint_every=0)
    old_pred = tmp_path / "old_pred.h5"
    torch_stages.predict(data, tmp_path / "old.h5", old_pred, job_old)
    out = tmp_path / "train" / "chunk0.h5"
    kill_on_second_replica(monkeypatch, lambda: torch_stages.train(data, out, job_old, checkpoint_every=1))
    assert (files.checkpoint_dir(out) / "replica_0000.pt").exists()

    write_npz(npz, seed=2)  # same path, same shapes, other contents
    c_new = arrays_config(npz)
    assert plan.data_hash(c_new) != job_old["data_hash"]
    # a dataset job planned before the file changed refuses to write the new contents as the old
    with pytest.raises(Exception, match="changed after this workflow was planned"):
        analysis_stages.dataset(tmp_path / "stale.h5", plan.data_spec(c_old), job_old["data_hash"])
    analysis_stages.dataset(data, plan.data_spec(c_new), plan.data_hash(c_new))
    job_new = plan.train_job(c_new, "cnn", "control", 0)
    log = tmp_path / "train.log"
    torch_stages.train(data, out, job_new, log_path=log, checkpoint_every=1)
    text = log.read_text()
    assert "ignoring the checkpoints" in text and "resuming" not in text
    torch_stages.train(data, tmp_path / "clean.h5", job_new, checkpoint_every=0)
    assert_bitwise(read_weights(out), read_weights(tmp_path / "clean.h5"))

    # outputs made from the old contents are refused, naming the file and the data hash
    with pytest.raises(InputError, match="data_hash") as err:
        torch_stages.predict(data, tmp_path / "old.h5", tmp_path / "p.h5", job_new)
    assert "old.h5" in str(err.value)
    with pytest.raises(InputError, match="data_hash") as err:
        analysis_stages.metrics([old_pred], tmp_path / "m.h5", expect.metrics_params(c_new, "cnn", "control"))
    assert "old_pred.h5" in str(err.value)
    assert not (tmp_path / "m.h5").exists()


LOADER = """
import numpy as np
from nondet.io.formats import make_mnist1d

def load(seed):
    # what the researcher's loader returns can change without the config changing
    return make_mnist1d(seed=int(open(seed).read()), num_samples=400)
"""


@pytest.mark.slow
def test_loader_data_changed_after_a_kill(tmp_path, monkeypatch):
    """Item 1 for ``loader``: the config (loader, args) is unchanged but its data are not; the
    checkpoints are keyed by the arrays' SHA-256 and a training file of other contents is refused."""
    (tmp_path / "myload.py").write_text(textwrap.dedent(LOADER))
    seed_file = tmp_path / "seed.txt"
    seed_file.write_text("1")
    c = arrays_config(tmp_path / "unused.npz")
    c = {
        **c,
        "dataset": {
            "name": "loader",
            "loader": "myload:load",
            "pythonpath": str(tmp_path),
            "args": {"seed": str(seed_file)},
        },
    }
    c = cfg.validate(c)
    data = tmp_path / "data.h5"
    analysis_stages.dataset(data, plan.data_spec(c), plan.data_hash(c))
    job = plan.train_job(c, "cnn", "control", 0)
    torch_stages.train(data, tmp_path / "old.h5", job, checkpoint_every=0)
    out = tmp_path / "train" / "chunk0.h5"
    kill_on_second_replica(monkeypatch, lambda: torch_stages.train(data, out, job, checkpoint_every=1))

    seed_file.write_text("2")
    analysis_stages.dataset(data, plan.data_spec(c), plan.data_hash(c))
    log = tmp_path / "train.log"
    torch_stages.train(data, out, job, log_path=log, checkpoint_every=1)
    text = log.read_text()
    assert "ignoring the checkpoints" in text and "content_sha256" in text and "resuming" not in text
    torch_stages.train(data, tmp_path / "clean.h5", job, checkpoint_every=0)
    assert_bitwise(read_weights(out), read_weights(tmp_path / "clean.h5"))
    with pytest.raises(InputError, match="trained on other data contents") as err:
        torch_stages.predict(data, tmp_path / "old.h5", tmp_path / "p.h5", job)
    assert "old.h5" in str(err.value)


@pytest.mark.slow
def test_a_damaged_data_set_file_is_refused(tmp_path):
    import h5py

    npz = tmp_path / "my.npz"
    write_npz(npz, seed=1)
    c = arrays_config(npz)
    data = tmp_path / "data.h5"
    analysis_stages.dataset(data, plan.data_spec(c), plan.data_hash(c))
    with h5py.File(data, "r+") as f:
        f["y_test"][0] = (f["y_test"][0] + 1) % 10
    with pytest.raises(InputError, match="is damaged") as err:
        load_dataset(data, plan.data_hash(c))
    assert str(data) in str(err.value)


def test_built_in_data_hash_is_that_of_the_config_section():
    """The default outputs are not retrained: a built-in data set's hash is unchanged."""
    from helpers import default_config

    from nondet.io.h5io import spec_hash

    c = cfg.validate(default_config())
    assert plan.data_hash(c) == spec_hash(dict(c["dataset"]))
    assert json.dumps(plan.data_spec(c))  # plain


# --- item 2: checkpoints are read without running pickled code ---------------------------------


class _Payload:
    """Pickles as a call that creates a file when unpickled (what a hostile checkpoint can do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("content", ["pickled object", "random bytes"])
def test_an_unreadable_or_pickled_checkpoint_is_ignored_without_running_it(
    tmp_path, small_data, recipe, cnn_spec, content
):
    """A checkpoint holding a pickled object ran its code (a file was created) before the key
    check; random bytes raised an uncaught UnpicklingError naming no file."""
    import torch

    from nondet.seeds import replica_seeds

    ckpt = tmp_path / "replica_0000.pt"
    marker = tmp_path / "payload_ran"
    if content == "pickled object":
        torch.save({"key": _Payload(marker), "epoch": 1}, ckpt)
    else:
        ckpt.write_bytes(np.random.default_rng(0).bytes(4096))
    lines = []
    seeds = replica_seeds("control", 0, 0)
    run = {"epochs": 1}
    res = training.train_replica(
        TrainRun(cnn_spec, {**recipe, **run}, torch.device("cpu")),
        seeds,
        small_data,
        Bookkeeping(log=lines.append, checkpoint=ckpt, checkpoint_every=1),
    )
    assert not marker.exists(), "the checkpoint's pickled code ran"
    said = [line for line in lines if "ignoring checkpoint" in line]
    assert said and str(ckpt) in said[0] and "cannot be read" in said[0] and "retraining" in said[0]
    straight = training.train_replica(
        TrainRun(cnn_spec, {**recipe, **run}, torch.device("cpu")), seeds, small_data, Bookkeeping(log=lambda _: None)
    )
    for name in straight["state"]:
        assert np.array_equal(res["state"][name], straight["state"][name])
    # the ignored file was replaced by a readable checkpoint of this run: a rerun resumes from it
    lines.clear()
    again = training.train_replica(
        TrainRun(cnn_spec, {**recipe, **run}, torch.device("cpu")),
        seeds,
        small_data,
        Bookkeeping(log=lines.append, checkpoint=ckpt, checkpoint_every=1),
    )
    assert any("resuming from checkpoint" in line for line in lines)
    for name in straight["state"]:
        assert np.array_equal(again["state"][name], straight["state"][name])


def test_checkpoints_hold_only_tensors_and_plain_types(tmp_path, small_data, recipe, cnn_spec):
    """Snapshots (NumPy arrays) and curves survive a weights_only round trip bitwise."""
    import torch

    from nondet.seeds import replica_seeds

    ckpt = tmp_path / "replica_0000.pt"
    seeds = replica_seeds("all", 1, 0)
    r = {**recipe, "epochs": 2, "cycles": 2}
    first = training.train_replica(
        TrainRun(cnn_spec, r, torch.device("cpu")),
        seeds,
        small_data,
        Bookkeeping(log=lambda _: None, checkpoint=ckpt, checkpoint_every=1),
    )
    torch.load(ckpt, weights_only=True)  # raises on any pickled object
    key = {
        "seeds": seeds.as_dict(),
        "recipe": r,
        "model": cnn_spec,
        "accelerator": training.accelerator_name(torch.device("cpu")),
    }  # the training loop's key
    state = loop.load_checkpoint(ckpt, key, "cpu", log=lambda _: None)
    assert state is not None and len(state["snapshots"]) == 2
    for a, b in zip(state["snapshots"], first["snapshots"]):
        assert a.keys() == b.keys() and all(isinstance(a[k], np.ndarray) and np.array_equal(a[k], b[k]) for k in a)


# --- item 3: one report, one config ------------------------------------------------------------


def tiny_workflow(lr):
    return {
        "experiment": "stale",
        "replicas": 2,
        "replicas_per_job": 2,
        "dataset": {"num_samples": 300},
        "training": {"epochs": 1, "batch_size": 64, "eval_every": 0, "lr": lr},
        "models": {"lin": {"arch": "linear", "conditions": ["init"]}},
        "metrics": {"bootstrap_resamples": 20},
        "divergence": {"models": []},
        "stability": {"models": []},
        "mitigation": {"models": []},
    }


@pytest.mark.slow
def test_a_report_after_a_failed_run_refuses_the_stale_table(tmp_path):
    """provenance.csv was rewritten for the new config before training; when a later job failed,
    diversity.csv stayed from the last good config and --report attributed it to the new settings,
    rc 0. Four Snakemake runs of a 2-replica linear model: about 40 s on 2 cores."""
    from helpers import snakemake

    good, bad = tiny_workflow(0.1), tiny_workflow(1e37)  # lr 1e37: every replica diverges
    snakemake(tmp_path, "--cores", "1", config=good)
    table = (tmp_path / "results/tables/diversity.csv").read_text()
    snakemake(tmp_path, "--report", "good.html", config=good)
    assert (tmp_path / "good.html").exists()
    failed = snakemake(tmp_path, "--cores", "1", config=bad, check=False)
    assert failed.returncode != 0 and "did not diverge" in failed.stderr
    assert (tmp_path / "results/tables/diversity.csv").read_text() == table  # stale, from lr 0.1
    out = snakemake(tmp_path, "--report", "bad.html", config=bad, check=False)
    assert out.returncode != 0 and not (tmp_path / "bad.html").exists()
    assert "cannot build the report" in out.stderr and "was made from another config" in out.stderr
    assert "results/tables/provenance.csv" in out.stderr
    # the outputs of the last finished run still make its report: all from one config
    snakemake(tmp_path, "--report", "again.html", config=good)
    # a table rebuilt behind provenance.csv's back is named
    (tmp_path / "results/tables/diversity.md").write_text("edited\n")
    out = snakemake(tmp_path, "--report", "mixed.html", config=good, check=False)
    assert out.returncode != 0 and "results/tables/diversity.md: not the file" in out.stderr


# --- item 4: imported probabilities are not read as logits ------------------------------------


def test_probabilities_given_without_kind_are_refused_naming_group_files_and_key(tmp_path):
    """Rows in [0, 1] summing to 1, given without kind: probabilities, were analysed as logits
    (cross-entropy 2.05 instead of 1.19)."""
    from scipy import special

    from nondet.io.runs import RunsError, load_group

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 50)
    (tmp_path / "g").mkdir()
    for i in range(3):
        z = rng.normal(0, 1, (50, 4))
        z[np.arange(50), labels] += 1
        np.save(tmp_path / "g" / f"run{i}.npy", special.softmax(z, -1))
    np.save(tmp_path / "labels.npy", labels)
    spec = {"predictions": str(tmp_path / "g" / "*.npy"), "labels": str(tmp_path / "labels.npy")}
    with pytest.raises(RunsError) as err:
        load_group(spec, "mine")
    msg = str(err.value)
    assert "runs.groups.mine" in msg and "3 of 3 run(s) hold probabilities" in msg
    assert "run0.npy" in msg and "set runs.groups.mine.kind: probabilities" in msg
    assert load_group({**spec, "kind": "probabilities"}, "mine")["logits"].shape == (3, 50, 4)
    # logits that merely lie in [0, 1] are logits
    for i in range(3):
        np.save(tmp_path / "g" / f"run{i}.npy", rng.uniform(0, 1, (50, 4)))
    assert load_group(spec, "mine")["logits"].shape == (3, 50, 4)


@pytest.mark.slow
@pytest.mark.parametrize("missing", ["labels", "metadata"])
def test_missing_labels_or_metadata_file_of_imported_runs_names_it(tmp_path, missing):
    """A missing labels or metadata file gave KeyError: 'm' in rule predict."""
    from helpers import snakemake

    (tmp_path / "g").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        np.save(tmp_path / "g" / f"run{i}.npy", rng.normal(0, 1, (20, 3)).astype(np.float32))
    np.save(tmp_path / "labels.npy", np.arange(20) % 3)
    (tmp_path / "meta.csv").write_text("file,seed\nrun0.npy,0\nrun1.npy,1\n")
    group = {"predictions": "g/*.npy", "labels": "labels.npy", "metadata": "meta.csv", "model": "m"}
    group[missing] = f"no_{missing}.file"
    config = {"models": {}, "runs": {"groups": {"a": group}}, "metrics": {"bootstrap_resamples": 20}}
    out = snakemake(tmp_path, "-n", config=config, check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert f"config key runs.groups.a.{missing}: file 'no_{missing}.file' does not exist" in text
    assert "KeyError" not in text


# --- item 5: a file missing a replica ----------------------------------------------------------


@pytest.mark.slow
def test_train_or_predict_file_missing_a_replica_is_refused_naming_it(tmp_path):
    """A train file missing a replica gave a table with one replica fewer and no warning."""
    import h5py

    c = cfg.validate(
        {
            "replicas": 3,
            "replicas_per_job": 3,
            "vectorize": "off",
            "dataset": {"num_samples": 300},
            "training": {"epochs": 1, "batch_size": 64, "eval_every": 0},
            "models": {"lin": {"arch": "linear", "conditions": ["init"]}},
            "metrics": {"bootstrap_resamples": 20},
        }
    )
    data = tmp_path / "data.h5"
    analysis_stages.dataset(data, plan.data_spec(c), plan.data_hash(c))
    job = plan.train_job(c, "lin", "init", 0)
    torch_stages.train(data, tmp_path / "t.h5", job, checkpoint_every=0)
    pred = tmp_path / "p.h5"
    torch_stages.predict(data, tmp_path / "t.h5", pred, job)
    params = expect.metrics_params(c, "lin", "init")
    analysis_stages.metrics([pred], tmp_path / "m.h5", params)  # the whole file is fine

    with h5py.File(tmp_path / "t.h5", "r+") as f:
        del f["replica_0001"]
    with pytest.raises(InputError, match=r"lacks replica\(s\) 1 ") as err:
        torch_stages.predict(data, tmp_path / "t.h5", tmp_path / "p2.h5", job)
    assert "t.h5" in str(err.value) and not (tmp_path / "p2.h5").exists()

    with h5py.File(pred, "r+") as f:  # drop replica 2's row from every per-replica dataset
        for key in ("logits", "features", "replicas", "diverged", "absorbed"):
            kept = f[key][()][:2]
            del f[key]
            f.create_dataset(key, data=kept)
    with pytest.raises(InputError, match=r"lacks replica\(s\) 2 ") as err:
        analysis_stages.metrics([pred], tmp_path / "m2.h5", params)
    assert "p.h5" in str(err.value) and not (tmp_path / "m2.h5").exists()


# --- item 6: unclear or wasteful cases end with a message naming the key or file --------------


def test_full_disk_while_writing_hdf5_names_the_output_and_free_space(tmp_path):
    """h5py reports ENOSPC as a raw RuntimeError naming only the temporary file."""
    from nondet.io.h5io import OutputError, atomic_h5

    out = tmp_path / "results" / "predict" / "chunk0.h5"
    h5py_error = RuntimeError(
        f"Can't write data (file write failed: time = Fri Dec  4 03:00:00 2026, filename = "
        f"'{out.parent}/.chunk0.h5.tmp-1.h5', file descriptor = 5, errno = 28, error message = "
        "'No space left on device', buf = 0x1, total write size = 4096)"
    )
    with pytest.raises(OutputError) as err:
        with atomic_h5(out, {"kind": "predict"}) as f:
            f.create_dataset("logits", data=np.zeros(4))
            raise h5py_error
    msg = str(err.value)
    assert f"cannot write {out}: no space left on device" in msg and "MiB free" in msg
    assert list(out.parent.iterdir()) == []  # no temporary file left


def test_single_class_data_set_is_refused(tmp_path):
    from nondet.io.checksums import DataError
    from nondet.io.datasets import make_dataset_arrays

    a = make_mnist1d(seed=1, num_samples=200)
    a["y_train"][:] = 3
    a["y_test"][:] = 3
    np.savez(tmp_path / "one.npz", **a)
    with pytest.raises(DataError, match="y_train holds a single class"):
        make_dataset_arrays({"name": "arrays", "path": str(tmp_path / "one.npz")})


def test_npz_that_is_not_a_zip_names_the_file(tmp_path):
    from nondet.io.checksums import DataError
    from nondet.io.datasets import make_dataset_arrays

    bad = tmp_path / "mine.npz"
    np.save(tmp_path / "x.npy", np.zeros(3))
    bad.write_bytes((tmp_path / "x.npy").read_bytes())  # an .npy saved under a .npz name
    with pytest.raises(DataError, match="is not a .npz archive") as err:
        make_dataset_arrays({"name": "arrays", "path": str(bad)})
    assert str(bad) in str(err.value)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"models": {"../x": {"arch": "linear", "conditions": ["init"]}}}, "config key models: '../x' does not match"),
        ({"models": {"a/b": {"arch": "linear", "conditions": ["init"]}}}, "they become folder names"),
        ({"models": {"": {"arch": "linear", "conditions": ["init"]}}}, "config key models: '' does not match"),
        ({"dataset": {"seed": 2**32}}, "config key dataset.seed: 4294967296 is greater than the maximum"),
        ({"replicas": 10**7, "replicas_per_job": 10**7}, "more than max_replicas (default 10 x max_jobs) = 200000"),
        ({"vectorize": True}, 'quote the value, e.g. "on"'),
        ({"training": {"epochs": "3"}}, "write 3 in a --configfile"),
        # `replicas_per_job: 1e7` in YAML arrives as the string '1e7'; "write 1.0e+7" was then refused
        ({"replicas_per_job": "1e7"}, "write 10000000, without exponent"),
        ({"replicas_per_job": 1e7}, "write 10000000, without the decimal point"),
        # comparison and factorial names become folders results/compare/<name>/ etc.
        ({"comparisons": {"../c": {"model": "mlp", "candidate": {}}}}, "config key comparisons: '../c' does not match"),
        ({"comparisons": {"a/b": {"model": "mlp", "candidate": {}}}}, "config key comparisons: 'a/b' does not match"),
        ({"comparisons": {"": {"model": "mlp", "candidate": {}}}}, "config key comparisons: '' does not match"),
        ({"factorial": {"../c": {"model": "mlp", "sources": ["init", "shuffle"]}}}, "config key factorial: '../c'"),
        ({"factorial": {"a/b": {"model": "mlp", "sources": ["init", "shuffle"]}}}, "config key factorial: 'a/b'"),
        ({"factorial": {"": {"model": "mlp", "sources": ["init", "shuffle"]}}}, "config key factorial: '' does"),
        ({"runs": {"comparisons": {"../c": {"baseline": "a", "candidate": "b"}}}}, "key runs.comparisons: '../c'"),
        ({"runs": {"comparisons": {"a/b": {"baseline": "a", "candidate": "b"}}}}, "key runs.comparisons: 'a/b'"),
        ({"runs": {"comparisons": {"": {"baseline": "a", "candidate": "b"}}}}, "key runs.comparisons: '' does"),
    ],
)
def test_config_guards_and_hints(change, message):
    from helpers import default_config

    c = {**default_config(), **change}
    if "models" in change:
        c = {**c, **{k: {"models": []} for k in ("divergence", "stability", "mitigation", "budget")}}
    with pytest.raises(cfg.ConfigError) as err:
        cfg.validate(c)
    assert message in str(err.value)
    assert "write 3.0" not in str(err.value) and "1.0e+7" not in str(err.value)


def test_yaml_merge_key_is_not_a_syntax_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "training: &t\n  epochs: 3\nmodels:\n  lin: {arch: linear, conditions: [init]}\n"
        "overrides:\n  lin:\n    init:\n      <<: *t\n      lr: 0.1\n"
    )
    loaded = cfg.load_yaml(path)
    assert loaded["overrides"]["lin"]["init"] == {"epochs": 3, "lr": 0.1}
    path.write_text("replicas: 2\nreplicas: 3\n")  # duplicates are still refused
    with pytest.raises(cfg.ConfigError, match="duplicate key 'replicas'"):
        cfg.load_yaml(path)


def test_user_model_returning_nan_fails_its_check(tmp_path):
    import torch

    from nondet.training.usermodel import ModelError, check_model

    (tmp_path / "nanmodel.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class Net(nn.Module):
                def __init__(self, k):
                    super().__init__()
                    self.fc = nn.Linear(40, k)

                def forward(self, x):
                    return self.fc(x.flatten(1)) / (x.flatten(1).sum(1, keepdim=True) * 0)

            def build(input_shape, num_classes):
                return Net(num_classes)
            """
        )
    )
    spec = {"arch": "nanmodel:build", "params": {}, "pythonpath": str(tmp_path)}
    x = torch.from_numpy(make_mnist1d(seed=1, num_samples=100)["x_train"][:2])
    with pytest.raises(ModelError, match="forward returned NaN/inf logits"):
        check_model(spec, (1, 40), 10, "mine", examples=x)


@pytest.mark.slow
def test_unwritable_output_folder_is_found_before_training(tmp_path, monkeypatch):
    """With checkpoint_every 0 an unwritable folder was found only after training."""
    import os

    from nondet.io.h5io import OutputError

    npz = tmp_path / "my.npz"
    write_npz(npz, seed=1)
    c = arrays_config(npz)
    data = tmp_path / "data.h5"
    analysis_stages.dataset(data, plan.data_spec(c), plan.data_hash(c))
    folder = tmp_path / "ro"
    folder.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(folder) else real_access(p, mode))
    calls = []
    monkeypatch.setattr(torch_stages, "train_replica", lambda *a, **k: calls.append(1))
    with pytest.raises(OutputError, match=f"output directory {folder} is not writable"):
        torch_stages.train(data, folder / "chunk0.h5", plan.train_job(c, "cnn", "control", 0), checkpoint_every=0)
    assert calls == []


@pytest.mark.slow
def test_workflow_after_regenerating_the_arrays_file_equals_a_clean_run(tmp_path, monkeypatch):
    """Item 1 end to end: a run on my.npz, a training job of it interrupted (its checkpoint left
    behind), my.npz regenerated at the same path, Snakemake run again: the weights equal those of
    a clean training on the new contents (the old code resumed the old-data checkpoint). Two
    Snakemake runs of a 2-replica linear model: about 45 s on 2 cores."""
    from helpers import snakemake

    def config():
        return {
            "experiment": "mine",
            "replicas": 2,
            "replicas_per_job": 2,
            "vectorize": "off",  # per-replica checkpoints (the interrupted job below)
            "dataset": {"name": "arrays", "path": "my.npz"},
            "training": {"epochs": 2, "batch_size": 64, "eval_every": 0},
            "models": {"lin": {"arch": "linear", "conditions": ["init"]}},
            "metrics": {"bootstrap_resamples": 20},
            "divergence": {"models": []},
            "stability": {"models": []},
            "mitigation": {"models": []},
        }

    run = tmp_path / "run"
    run.mkdir()
    write_npz(run / "my.npz", seed=1)
    snakemake(run, "--cores", "1", config=config())
    monkeypatch.chdir(run)  # the config's relative path, as Snakemake sees it
    c_old = cfg.validate(config())
    job = plan.train_job(c_old, "lin", "init", 0)
    out = run / "results/train/lin/init/chunk0.h5"
    data = run / "results/data/arrays.h5"
    kill_on_second_replica(monkeypatch, lambda: torch_stages.train(data, out, job, checkpoint_every=1))
    assert (files.checkpoint_dir(out) / "replica_0000.pt").exists()

    write_npz(run / "my.npz", seed=2)
    snakemake(run, "--cores", "1", config=config())
    log = (run / "logs/train/lin/init/chunk0.log").read_text()
    assert "ignoring the checkpoints" in log and "resuming" not in log
    c_new = cfg.validate(config())
    assert plan.data_hash(c_new) != job["data_hash"]
    clean = tmp_path / "clean.h5"  # the new contents' data set, as the rerun made it
    torch_stages.train(data, clean, plan.train_job(c_new, "lin", "init", 0), checkpoint_every=0)
    assert_bitwise(read_weights(out), read_weights(clean))
    # and the table was remade from the new training (its metrics expect the new data_hash)
    files.load_rows(["results/metrics/lin/init.h5"], [expect.metrics_expect(c_new, "lin", "init")])


@pytest.mark.slow
def test_unwritable_tables_folder_is_found_while_planning(tmp_path):
    """A read-only results/tables was found only by the table job, after all training (or, made
    first, provenance.csv failed while other jobs ran). Read-only: chmod, or for root (whom
    permissions do not stop) the immutable flag."""
    import os
    import stat
    import subprocess

    from helpers import snakemake

    tables = tmp_path / "results" / "tables"
    tables.mkdir(parents=True)
    tables.chmod(stat.S_IRUSR | stat.S_IXUSR)
    immutable = os.access(tables, os.W_OK)
    if immutable:
        subprocess.run(["chattr", "+i", str(tables)], check=True)
    try:
        assert not os.access(tables, os.W_OK)
        out = snakemake(tmp_path, "-n", config=tiny_workflow(0.1), check=False)
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(tables)], check=True)
        tables.chmod(stat.S_IRWXU)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "output folder(s) results/tables cannot be written" in text
