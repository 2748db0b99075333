"""A researcher's script, round 2 (nondet.workflow.script, scriptbox, scriptaudit): labels always
checked, the resample a script trained on checked, seeds in 32 bits, the audit naming the global
generator behind a failure, and the box a script job runs in (scratch folder, timeout, children
killed). Scripts: tests/own_scripts.py (tiny models on mnist1d); about 30 s in all."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import pytest

from nondet.io.files import load_predictions
from nondet.seeds import SOURCES
from nondet.workflow import analysis_stages, plan
from nondet.workflow import config as cfg
from nondet.workflow.script import ScriptError, audit_script, seeds_json, train_script
from nondet.workflow.scriptbox import collapse_progress

pytestmark = pytest.mark.slow  # every test here starts a subprocess

HERE = str(Path(__file__).parent)


def make_config(train="own_scripts:honest", conditions=("control", "init", "shuffle", "data"), **model):
    spec = {"command": train} if train.startswith("cmd:") else {"train": train, "pythonpath": HERE}
    if "command" in spec:
        spec["command"] = train[4:]
    return cfg.validate(
        {
            "replicas": 2,
            "replicas_per_job": 2,
            "dataset": {"name": "mnist1d", "num_samples": 300},
            "models": {"s": {**spec, "conditions": list(conditions), **model}},
        }
    )


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    c = make_config()
    path = tmp_path_factory.mktemp("data") / "mnist1d.h5"
    analysis_stages.dataset(path, plan.data_spec(c), plan.data_hash(c))
    return path.resolve()


def train(tmp_path, data_file, condition="init", timeout=86400.0, **kw):
    c = make_config(**kw)
    out = tmp_path / "p.h5"
    train_script(data_file, out, plan.train_job(c, "s", condition, 0), tmp_path / "train.log", timeout=timeout)
    return out


def audit(tmp_path, data_file, **kw):
    c = make_config(**kw)
    out, log = tmp_path / "audit.json", tmp_path / "audit.log"
    audit_script(data_file, out, plan.audit_job(c, "s"), log)
    return json.loads(out.read_text()), log.read_text()


# --- labels ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "script, message",
    [
        ("no_labels", "wrote no `labels`.*ctx.save does it"),
        ("own_split", r"differ from the data set's y_test in \d+ of 60 rows: another test set"),
        (
            "reversed_order",
            r"differ from the data set's y_test in \d+ of 60 rows: the same labels in another row order",
        ),
    ],
)
def test_a_script_scoring_another_split_or_order_is_refused(tmp_path, data_file, script, message):
    with pytest.raises(ScriptError, match=message) as e:
        train(tmp_path, data_file, train=f"own_scripts:{script}")
    assert str(e.value).startswith("model s replica 0 (init): ")
    assert not (tmp_path / "p.h5").exists()


def test_a_command_must_write_labels(tmp_path, data_file):
    writes = "import numpy as np, sys; np.savez(sys.argv[1], logits=np.zeros((60, 10), np.float32))"
    with pytest.raises(ScriptError, match="wrote no `labels`"):
        train(tmp_path, data_file, train=f"cmd:{sys.executable} -c '{writes}' {{out}}")


# --- the data source: the resample a script trained on ----------------------------------------------


def test_a_script_that_draws_its_own_resample_is_refused(tmp_path, data_file):
    with pytest.raises(ScriptError, match="are not the replica's resample"):
        train(tmp_path, data_file, condition="data", train="own_scripts:own_bootstrap")
    out = train(tmp_path, data_file, condition="data")  # ctx.sampler / ctx.train_index: accepted
    assert load_predictions([out])["logits"].shape == (2, 60, 10)
    with h5py.File(out) as f:  # provenance: the resampling that happened, per replica
        res = json.loads(f.attrs["provenance"])["resampling"]
    assert res["training_set"] == "the pipeline's" and res["replicas"]["1"]["n_train"] == 240
    assert res["replicas"]["0"]["train_index_sha256"] != res["replicas"]["1"]["train_index_sha256"]
    with h5py.File(train(tmp_path, data_file, condition="init")) as f:  # none happened: none recorded
        assert "resampling" not in json.loads(f.attrs["provenance"])


def test_a_command_gets_its_resample_and_must_report_it(tmp_path, data_file):
    script = tmp_path / "cmd.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, h5py, numpy as np
            out, data, index, report = sys.argv[1:5]
            with h5py.File(data) as f:
                y = f["y_test"][()]
            idx = np.load(index)
            arrays = {"logits": np.zeros((len(y), 10), np.float32) + len(np.unique(idx)), "labels": y}
            if report == "yes":
                arrays["train_index"] = idx
            np.savez(out, **arrays)
            """
        )
    )
    command = f"{sys.executable} {script} {{out}} {{data}} {{train_index}} "
    out = train(tmp_path, data_file, condition="data", train=f"cmd:{command}yes")
    logits = load_predictions([out])["logits"]
    assert logits[0, 0, 0] != logits[1, 0, 0] and logits[0, 0, 0] < 240  # two bootstraps of 240
    with pytest.raises(ScriptError, match="data source is on but the script reports no `train_index`"):
        train(tmp_path, data_file, condition="data", train=f"cmd:{command}no")
    train(tmp_path, data_file, condition="init", train=f"cmd:{command}no")  # data off: no index needed


def test_a_missing_package_of_a_train_script_is_named(tmp_path, data_file):
    (tmp_path / "needs_pkg.py").write_text("import package_that_is_not_installed\n\ndef main(ctx):\n    pass\n")
    c = make_config(train="needs_pkg:main")
    c["models"]["s"]["pythonpath"] = str(tmp_path)
    with pytest.raises(Exception, match="imports 'package_that_is_not_installed', which is not installed"):
        train_script(data_file, tmp_path / "p.h5", plan.train_job(c, "s", "init", 0))


def test_a_command_reading_train_data_gets_the_resample_as_its_training_set(tmp_path, data_file):
    """{train_data}: {data} whose x_train/y_train are the replica's resample (nothing to report)."""
    script = tmp_path / "reads.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, h5py, numpy as np
            out, data = sys.argv[1:3]
            with h5py.File(data) as f:
                x, y = f["x_train"][()], f["y_test"][()]
            distinct = len(np.unique(x.reshape(len(x), -1), axis=0))
            np.savez(out, logits=np.zeros((len(y), 10), np.float32) + distinct, labels=y)
            """
        )
    )
    command = f"cmd:{sys.executable} {script} {{out}} {{train_data}}"
    logits = load_predictions([train(tmp_path, data_file, condition="data", train=command)])["logits"]
    assert logits[0, 0, 0] != logits[1, 0, 0] and max(logits[0, 0, 0], logits[1, 0, 0]) < 200  # ~63 % of 240
    full = load_predictions([train(tmp_path, data_file, condition="init", train=command)])["logits"]
    assert full[0, 0, 0] == full[1, 0, 0] > 200  # the source off: the whole training set


def test_a_script_that_owns_its_test_set_end_to_end(tmp_path, data_file):
    """data: script: the script's labels are the truth, recorded by the audit (SHA-256) and the
    same in every replica and condition; another order in one replica is refused by name."""
    c = make_config(train="own_scripts:owned", conditions=["control", "init", "shuffle"], data="script")
    audit_path = tmp_path / "audit.json"
    audit_script(data_file, audit_path, plan.audit_job(c, "s"), tmp_path / "audit.log")
    report = json.loads(audit_path.read_text())
    assert report["repeatable"] and not report["problems"] and len(report["labels_sha256"]) == 64
    for condition in ("control", "init"):
        out = tmp_path / f"{condition}.h5"
        train_script(data_file, out, plan.train_job(c, "s", condition, 0), tmp_path / "t.log", audit_path=audit_path)
        pred = load_predictions([out])
        assert pred["logits"].shape == (2, 50, 3) and list(pred["labels"][:4]) == [0, 1, 2, 0]
    c = make_config(train="own_scripts:owned_reordered", conditions=["init"], data="script")
    with pytest.raises(ScriptError, match=r"model s replica 1 \(init\): its test labels \(SHA-256 \w+\) are not"):
        train_script(data_file, tmp_path / "r.h5", plan.train_job(c, "s", "init", 0), audit_path=audit_path)
    with pytest.raises(cfg.ConfigError, match="models.s.data: script needs the audit"):
        make_config(train="own_scripts:owned", data="script", audit="off")
    # the data source on: the script draws its resample itself (tests/test_script_data.py)


# --- seeds -----------------------------------------------------------------------------------------


def test_seeds_handed_to_scripts_fit_in_32_bits():
    c = make_config(conditions=["all", "bitflip"])
    for condition in ("all", "bitflip"):
        for s in plan.train_job(c, "s", condition, 0)["seeds"]:
            from nondet.seeds import ReplicaSeeds

            handed = json.loads(seeds_json(ReplicaSeeds(**s)))
            assert set(handed) == set(SOURCES)
            assert all(v is None or 0 <= v < 2**32 for v in handed.values()), handed
            assert any(v is not None and v >= 2**32 for v in s.values())  # the pipeline's own are 63-bit


# --- the audit names the cause ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "script, cause",
    [
        ("habit_python_random", "python's global `random`"),
        ("habit_numpy_mixup", "numpy's global RNG"),
        ("habit_shuffle_true", r"DataLoader\(shuffle=True\) / RandomSampler without a generator"),
        ("habit_init_outside", r"outside `with ctx.init\(\):`"),
        ("habit_plain_dropout", r"dropout \(nn.Dropout / F.dropout\) drew its masks"),
        ("habit_workers", "DataLoader with 1 workers and no generator"),
    ],
)
def test_the_audit_names_each_global_generator_habit(tmp_path, data_file, script, cause):
    with pytest.raises(ScriptError, match="control replicas differ") as e:
        audit(tmp_path, data_file, train=f"own_scripts:{script}", conditions=["control", "init"])
    assert "caused by" in str(e.value)
    kept = json.loads((tmp_path / "audit.json").read_text())  # written on failure too
    assert kept["sources"] == {"init": "cannot tell (control is not repeatable)"}
    import re

    named = [c for c in kept["causes"] if re.search(cause, c)]
    assert len(named) == 1, kept["causes"]
    others = {"python random": "python's global", "numpy": "numpy's global"}
    for key, text in others.items():  # the other global generators are not blamed
        if text not in cause:
            assert not any(text in c for c in kept["causes"]), (key, kept["causes"])


def test_the_audit_sees_one_seed_driving_init_and_shuffle(tmp_path, data_file):
    report, _ = audit(
        tmp_path, data_file, train="own_scripts:combined_seed", conditions=["init", "shuffle"], audit="warn"
    )
    assert report["repeatable"]
    assert report["sources"] == {s: "cannot tell (one seed drives both init and shuffle)" for s in ("init", "shuffle")}
    assert any("swapped gave bitwise the same" in p for p in report["problems"])
    report, _ = audit(
        tmp_path, data_file, train="own_scripts:one_seed_everything", conditions=["init", "shuffle"], audit="warn"
    )
    assert report["sources"] == {"init": "honoured", "shuffle": "ignored"}
    assert any("from the `init` seed (torch.manual_seed)" in p for p in report["problems"]), report["problems"]


def test_rows_trained_under_a_failed_warn_audit_are_marked(tmp_path, data_file):
    c = make_config(train="own_scripts:ignores_shuffle", audit="warn")
    audit_path = tmp_path / "audit.json"
    audit_script(data_file, audit_path, plan.audit_job(c, "s"), tmp_path / "audit.log")
    out = tmp_path / "p.h5"
    train_script(data_file, out, plan.train_job(c, "s", "init", 0), tmp_path / "t.log", audit_path=audit_path)
    import h5py

    with h5py.File(out) as f:
        assert "ignores the `shuffle` seed" in f.attrs["audit_failed"]
    assert "audit failed (audit: warn)" in (tmp_path / "t.log").read_text()
    assert "ignores the `shuffle` seed" in load_predictions([out])["audit_failed"]
    # the tables mark the row (‡), say why in the notes and explain the mark in the legend
    import pandas as pd

    from nondet.analysis import tables

    row = {"model": "s", "condition": "init", "n_replicas": 2, "n_absorbed": float("nan"), "n_identical_pairs": 0}
    df = pd.DataFrame([{**row, "audit_failed": "your script ignores the `shuffle` seed"}, {**row, "model": "t"}])
    assert tables.READER_COLUMNS["condition"](df.iloc[0]) == "init ‡"
    assert tables.READER_COLUMNS["condition"](df.iloc[1]) == "init"
    notes = [n for n in tables.table_notes(df) if "audit" in n]
    assert len(notes) == 1 and notes[0].startswith("WARNING s/init: trained under audit: warn")


# --- the box ------------------------------------------------------------------------------------------


def test_a_hanging_script_is_stopped_by_its_timeout(tmp_path, data_file):
    with pytest.raises(ScriptError, match=r"model s replica 0 \(init\): no result after 1 s.*models\.s\.timeout"):
        train(tmp_path, data_file, timeout=1.0, train="cmd:sleep 600; echo {out}")
    with pytest.raises(ScriptError, match=r"no result after 1 s.*models\.s\.timeout"):
        train(tmp_path, data_file, timeout=1.0, train="own_scripts:sleeps")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_children_of_a_command_end_with_it_and_side_files_stay_in_the_scratch_folder(tmp_path, data_file):
    """A child that keeps stdout open and outlives the command is killed when the command returns;
    what the script writes in its working folder lands in the scratch folder, removed on success."""
    pidfile = tmp_path / "child.pid"
    writes = (
        "import numpy as np, sys, h5py; y = h5py.File(sys.argv[2])['y_test'][()]; "
        "np.savez(sys.argv[1], logits=np.zeros((len(y), 10), np.float32), labels=y); "
        "open('side_file.txt', 'w').write('x')"
    )
    command = f'(sleep 300 & echo $! > {pidfile}); {sys.executable} -c "{writes}" {{out}} {{data}}'
    os.chdir(tmp_path)
    try:
        train(tmp_path, data_file, train=f"cmd:{command}")
    finally:
        os.chdir(Path(HERE).parent)
    assert not _alive(int(pidfile.read_text()))
    assert not (tmp_path / "side_file.txt").exists()
    assert not (tmp_path / ".p.h5.work").exists() and (tmp_path / "p.h5").is_file()


def test_a_failed_job_keeps_its_scratch_folder_until_the_next_run(tmp_path, data_file):
    with pytest.raises(ScriptError, match=r"working folder .*\.p\.h5\.work/replica_0000 \(kept until the job reruns\)"):
        train(tmp_path, data_file, train="cmd:echo left > side.txt; exit 2")
    assert (tmp_path / ".p.h5.work/replica_0000/side.txt").is_file()
    train(tmp_path, data_file)
    assert not (tmp_path / ".p.h5.work").exists()


def test_progress_bars_are_collapsed_in_logs():
    bar = "epoch 1\n" + "".join(f"\r{i:3d}%|{'#' * (i // 10)}" for i in range(0, 101, 5)) + "\ndone\n"
    assert collapse_progress(bar) == ["epoch 1", "100%|##########", "done"]


def test_sigterm_ends_the_scripts_process_group(tmp_path, data_file):
    """SIGTERM to a script job (as Snakemake sends it) ends the command and its children."""
    pidfile = tmp_path / "child.pid"
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {HERE!r})
        from test_script_checks import make_config
        from nondet.workflow import plan
        from nondet.workflow.script import train_script
        c = make_config(train="cmd:(sleep 300 & echo $! > {pidfile}); sleep 300")
        train_script({str(data_file)!r}, {str(tmp_path / "p.h5")!r}, plan.train_job(c, "s", "init", 0))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(HERE).parent)
    for _ in range(600):  # until the command has started its child
        if pidfile.exists() and pidfile.read_text().strip():
            break
        time.sleep(0.1)
    child = int(pidfile.read_text())
    assert _alive(child)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    for _ in range(100):
        if not _alive(child):
            break
        time.sleep(0.1)
    assert not _alive(child)
