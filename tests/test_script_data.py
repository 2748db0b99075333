"""The data source for a script that owns its data (models.<name>.data: script): the script draws
the replica's resample of its own training set (ctx.train_index, or `python -m nondet resample`
for a command), reports it with n_train, and the pipeline redraws it from the configured seed and
checks it; provenance records the resampling that happened and nothing when none did; no pipeline
data set is built for such a model. Scripts: tests/own_scripts.py. Slow: every test that writes
a predictions file (its provenance asks git), runs a command or Snakemake (tiny: 2 replicas, no
training); fast: the checks, the config and the resample command, called in process."""

import json
import re
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import planned_outputs, snakemake
from own_scripts import OWN_TRAIN

from nondet.cli import main as cli
from nondet.io.checksums import array_sha256
from nondet.io.files import load_predictions
from nondet.seeds import ReplicaSeeds
from nondet.training.resample import replica_index
from nondet.workflow import config as cfg
from nondet.workflow import plan
from nondet.workflow.script import ScriptError, audit_script, train_script
from nondet.workflow.scriptbox import absolute_words
from nondet.workflow.scriptio import check_resample

HERE = str(Path(__file__).parent)


def make_config(train="own_scripts:owned_resampled", conditions=("control", "data"), resampling=None, **model):
    spec = {"command": train[4:]} if train.startswith("cmd:") else {"train": train, "pythonpath": HERE}
    return cfg.validate(
        {
            "replicas": 2,
            "replicas_per_job": 2,
            "dataset": {"name": "mnist1d", "num_samples": 300},
            "data_resampling": resampling or {"kind": "bootstrap", "fraction": 1.0},
            "models": {"s": {**spec, "conditions": list(conditions), "data": "script", **model}},
        }
    )


def provenance(path) -> dict:
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["provenance"])


def train(tmp_path, condition="data", audit_path=None, **kw):
    c = make_config(**kw)
    out = tmp_path / f"{condition}.h5"
    train_script(None, out, plan.train_job(c, "s", condition, 0), tmp_path / "train.log", audit_path=audit_path)
    return out, c


# --- a train: script (in process) -----------------------------------------------------------------


@pytest.mark.slow  # provenance asks git for the commit
def test_a_train_script_owning_its_data_varies_the_data_source(tmp_path):
    """No data set at all (data_path None): the audit finds `data` honoured, the data row's
    replicas train on the configured resamples of the script's own 40 examples and differ from
    each other, control's do not; provenance records the resampling of the data row only."""
    c = make_config(resampling={"kind": "subsample", "fraction": 0.5})
    audit_path = tmp_path / "audit.json"
    audit_script(None, audit_path, plan.audit_job(c, "s"), tmp_path / "audit.log")
    report = json.loads(audit_path.read_text())
    assert report["sources"]["data"] == "honoured" and not report["problems"], report
    outs = {}
    for condition in ("control", "data"):
        outs[condition], _ = train(tmp_path, condition, audit_path, resampling={"kind": "subsample", "fraction": 0.5})
    control, data = (load_predictions([outs[k]])["logits"] for k in ("control", "data"))
    assert np.array_equal(control[0], control[1]) and not np.array_equal(data[0], data[1])
    assert not np.array_equal(control[0], data[0])
    prov = provenance(outs["data"])
    job = plan.train_job(c, "s", "data", 0)
    res = prov["resampling"]
    assert (res["kind"], res["fraction"], res["training_set"]) == ("subsample", 0.5, "the script's own")
    for r, seeds in zip(job["replicas"], job["seeds"]):
        index = replica_index(ReplicaSeeds(**seeds).data, OWN_TRAIN, job["recipe"]["resample"])
        assert res["replicas"][str(r)] == {
            "n_train": OWN_TRAIN,
            "size": 20,
            "distinct": 20,
            "train_index_sha256": array_sha256(index),
        }
    assert prov["data"] == "script" and len(prov["test_labels_sha256"]) == 64
    control_prov = provenance(outs["control"])  # no resampling happened: none recorded
    assert "resampling" not in control_prov and "resample" not in control_prov["job"]["recipe"]


@pytest.mark.slow  # provenance asks git for the commit
@pytest.mark.parametrize(
    "script, message",
    [
        ("owned_own_bootstrap", r"are not the replica's resample \(40, \d+ distinct\).*python -m nondet resample"),
        ("owned_no_n_train", r"data: script\), but it reports no `n_train`.*ctx.train_index"),
        ("owned_reads_data", r"has data: script, so the pipeline builds no data set for it and ctx.data.y_test"),
    ],
)
def test_an_owned_script_with_another_resample_or_none_is_refused(tmp_path, script, message):
    with pytest.raises(ScriptError, match=message) as e:
        train(tmp_path, train=f"own_scripts:{script}")
    assert str(e.value).startswith("model s replica 0 (data): ") and "train.log" in str(e.value)
    assert not (tmp_path / "data.h5").exists()


@pytest.mark.slow  # provenance asks git for the commit
def test_a_replica_with_the_data_source_off_needs_no_index(tmp_path):
    """Control (data seed None): a script reporting no index passes; the resample check is a
    pure function of what the script reports."""
    out, _ = train(tmp_path, "control", train="own_scripts:owned")
    assert load_predictions([out])["logits"].shape == (2, 50, 3)
    assert check_resample({"train_index": None, "n_train": None}, None, None, None, "w") == (None, None)
    with pytest.raises(ScriptError, match="the data source is off in this replica"):
        check_resample({"train_index": np.array([0, 0, 1]), "n_train": 3}, None, None, None, "w")
    with pytest.raises(ScriptError, match="reports n_train = 41, but the pipeline's training set has 40"):
        check_resample({"train_index": None, "n_train": np.int64(41)}, 5, None, 40, "w")
    with pytest.raises(ScriptError, match="n_train must be one whole number"):
        check_resample({"train_index": np.arange(3), "n_train": np.array([3.5])}, 5, None, None, "w")
    index = replica_index(5, 40, None)
    got, n = check_resample({"train_index": index[::-1], "n_train": np.int64(40)}, 5, None, None, "w")
    assert np.array_equal(got, index) and n == 40  # any order


def test_the_config_lets_an_owned_script_vary_data_but_not_name_the_pipelines_data():
    c = make_config(conditions=["control", "data", "all"])
    assert "resample" in plan.train_job(c, "s", "all", 0)["recipe"]
    for placeholder in ("data", "train_index", "train_data"):
        with pytest.raises(cfg.ConfigError, match=rf"models.s.command: \{{{placeholder}\}} name\(s\) the pipeline"):
            make_config(train=f"cmd:python x.py --in {{{placeholder}}} --out {{out}}")
    make_config(train="cmd:python x.py --resample {resample_json} --out {out} --braces {{data}}")  # escaped: fine


def test_a_module_after_dash_m_stays_a_module_name(monkeypatch):
    """`python -m nondet` run from the project root (where the folder nondet/ exists)."""
    monkeypatch.chdir(Path(HERE).parent)
    assert absolute_words("python -m nondet resample --n 3").startswith("python -m nondet ")
    assert absolute_words("python nondet/cli.py").endswith(str(Path("nondet/cli.py").resolve()))


def test_the_resample_command_draws_the_pipelines_index(tmp_path, capsys):
    seed = 3527577169254209511  # a 63-bit data seed, as {resample_json} hands it
    spec = {"kind": "bootstrap", "fraction": 0.5}
    out = tmp_path / "idx.npy"
    assert cli(["resample", "--resample", json.dumps({"seed": seed, **spec}), "--n", "40", "--out", str(out)]) == 0
    assert np.array_equal(np.load(out), replica_index(seed, 40, spec)) and len(np.load(out)) == 20
    assert "wrote 20 indices" in capsys.readouterr().out
    cli(["resample", "--seed", str(seed), "--kind", "subsample", "--n", "40", "--out", str(out)])
    assert np.array_equal(np.load(out), replica_index(seed, 40, {"kind": "subsample"}))
    cli(
        [
            "resample",
            "--resample",
            '{"seed": null, "kind": "bootstrap", "fraction": 1.0}',
            "--n",
            "4",
            "--out",
            str(out),
        ]
    )
    assert np.array_equal(np.load(out), np.arange(4))  # the source off: every example once
    with pytest.raises(SystemExit):
        cli(["resample", "--resample", '{"seed": 1, "colour": "red"}', "--n", "4", "--out", str(out)])


# --- a command (its own process) and the workflow -------------------------------------------------

COMMAND_SCRIPT = """
import json, sys
import numpy as np
out, index, seeds = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
y_train = np.arange(40) % 3  # its own training set's labels
idx = np.sort(np.random.default_rng(seeds["data"]).integers(0, 40, 40)) if index == "own" else np.load(index)
z = np.random.default_rng(seeds["init"] or 0).normal(size=(50, 3)) + np.bincount(y_train[idx], minlength=3) / len(idx)
np.savez(out, logits=z.astype(np.float32), labels=np.arange(50) % 3, train_index=idx, n_train=40)
"""


def command(tmp_path, own=False) -> str:
    script = tmp_path / "own_data_cmd.py"
    script.write_text(textwrap.dedent(COMMAND_SCRIPT))
    if own:
        return f"cmd:python {script} {{out}} own {{seeds_json}}"
    draw = "python -m nondet resample --resample {resample_json} --n 40 --out idx.npy"
    return f"cmd:{draw} && python {script} {{out}} idx.npy {{seeds_json}}"


@pytest.mark.slow
def test_a_command_owning_its_data_draws_the_resample_with_the_helper(tmp_path):
    out, _ = train(tmp_path, train=command(tmp_path), audit="warn")
    logits = load_predictions([out])["logits"]
    assert not np.array_equal(logits[0], logits[1])
    assert provenance(out)["resampling"]["replicas"]["0"]["n_train"] == 40
    with pytest.raises(ScriptError, match=r"replica 0 \(data\): the training examples it reports .* are not the"):
        train(tmp_path, train=command(tmp_path, own=True), audit="warn")


@pytest.mark.slow
def test_the_workflow_builds_no_data_set_for_scripts_that_own_their_data(tmp_path):
    """A train: script and a command, both data: script, varying data through Snakemake: no
    dataset job is planned or run, the data rows differ from control, the index is checked."""
    c = make_config()
    c["models"]["cmd"] = {
        "command": command(tmp_path)[4:],
        "conditions": ["control", "data"],
        "data": "script",
        "script": str(tmp_path / "own_data_cmd.py"),
    }
    c["metrics"] = {"bootstrap_resamples": 0}
    targets = [f"results/predict/{m}/{k}/chunk0.h5" for m in ("s", "cmd") for k in ("control", "data")]
    out = snakemake(tmp_path, "--cores", "2", *targets, config=c)
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", out.stdout + out.stderr, re.M))  # Snakemake's job stats
    assert stats.get("audit_script") == "2" and stats.get("train_script") == "4" and "dataset" not in stats, stats
    assert not (tmp_path / "results/data").exists()
    planned = planned_outputs(snakemake(tmp_path, "-n", "--forceall", config=c))  # the whole workflow
    assert "results/tables/diversity.csv" in planned and "results/predict/cmd/data/chunk0.h5" in planned
    assert not [p for p in planned if p.startswith("results/data/")], planned
    for m in ("s", "cmd"):
        control = load_predictions([tmp_path / f"results/predict/{m}/control/chunk0.h5"])["logits"]
        data = load_predictions([tmp_path / f"results/predict/{m}/data/chunk0.h5"])["logits"]
        assert np.array_equal(control[0], control[1]) and not np.array_equal(data[0], data[1]), m
        prov = provenance(tmp_path / f"results/predict/{m}/data/chunk0.h5")
        assert prov["resampling"]["training_set"] == "the script's own", m
