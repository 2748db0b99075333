"""Results follow the code: each rule's ``code`` param (nondet.workflow.codehash) changes with an
edit that can change its outputs and with nothing cosmetic. Unit tests on a copy of the package;
the slow test plans the real workflow after each kind of edit."""

import os
import re
import shutil
from pathlib import Path

import h5py
import pytest
from helpers import REPO, planned_outputs

from nondet.workflow import codehash

SCRIPTS = sorted(p.stem for p in (REPO / "workflow_scripts").glob("*.py"))
TRAINING = {"train", "predict", "divergence", "check_model", "train_script", "audit_script"}


def copy_tree(dest: Path) -> Path:
    """The package and its workflow scripts (and, for Snakemake, the rest of the workflow)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("nondet", "workflow_scripts", "rules", "envs", "report", "profiles"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    shutil.copy(REPO / "Snakefile", dest / "Snakefile")
    shutil.copy(REPO / "config.yaml", dest / "config.yaml")
    return dest


def hashes(root: Path) -> dict[str, str]:
    codehash.clear()
    return {s: codehash.script_hash(root / "workflow_scripts" / f"{s}.py") for s in SCRIPTS}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path} lacks {old!r}: update the test's edit"
    path.write_text(text.replace(old, new, 1))


@pytest.fixture
def tree(tmp_path):
    return copy_tree(tmp_path / "repo")


def changed(before: dict, after: dict) -> set[str]:
    return {s for s in before if before[s] != after[s]}


def test_a_metrics_edit_changes_the_analysis_stages_that_use_it_and_no_training(tree):
    before = hashes(tree)
    edit(tree / "nondet/analysis/metrics.py", "def accuracy(", "def _unused():\n    return 1\n\n\ndef accuracy(")
    assert not changed(before, hashes(tree))  # a new function nobody calls changes nothing
    src = (tree / "nondet/analysis/metrics.py").read_text()
    body = re.search(r"def accuracy\(.*?\n(.*?)\n\n", src, re.S).group(0)
    edit(tree / "nondet/analysis/metrics.py", body, body.replace("return ", "return 0 + ", 1))
    moved = changed(before, hashes(tree))
    assert "metrics" in moved
    assert not moved & (TRAINING | {"dataset"}), moved


def test_a_training_edit_changes_training_and_not_the_analysis(tree):
    before = hashes(tree)
    edit(tree / "nondet/training/optim.py", "import torch\n", "import torch\n\nEXTRA = 1\n")
    moved = changed(before, hashes(tree))
    assert {"train", "divergence"} <= moved  # the optimiser: training only, predicting never steps
    assert not moved & {"predict", "metrics", "dataset", "diversity_table", "plot_diversity", "compare"}, moved
    before = hashes(tree)
    edit(tree / "nondet/training/models.py", "import torch\n", "import torch\n\nEXTRA = 1\n")
    moved = changed(before, hashes(tree))
    assert {"train", "predict", "divergence"} <= moved  # the models: what trains and what predicts
    assert not moved & {"metrics", "dataset", "diversity_table", "plot_diversity", "compare"}, moved


def test_a_figure_edit_changes_the_figures_only(tree):
    before = hashes(tree)
    src = (tree / "nondet/analysis/plots.py").read_text()
    fn = re.search(r"def diversity_figure\(.*?\n    (\S.*?)\n", src, re.S).group(1)
    edit(tree / "nondet/analysis/plots.py", fn, f"_ = 1\n    {fn}")
    moved = changed(before, hashes(tree))
    assert {"plot_diversity", "runs_plot_diversity"} <= moved
    assert not moved & (TRAINING | {"metrics", "dataset", "diversity_table"}), moved


def test_docstrings_comments_and_formatting_change_no_hash(tree):
    before = hashes(tree)
    for path in sorted((tree / "nondet").rglob("*.py")):
        text = path.read_text()
        # a comment on every line that can take one, a docstring reworded, blank lines added
        text = re.sub(r'^(\s*)def (\w+)\((.*?)\):\n(\s+)"""', r'\1def \2(\3):\n\4"""Reworded. ', text, flags=re.M)
        text = text.replace("\nimport ", "\n# a comment\n\nimport ", 1)
        text = re.sub(r"^(def .*?:)$", r"\1  # note", text, flags=re.M)
        path.write_text(text + "\n\n# the end\n")
    assert not changed(before, hashes(tree))


def test_the_disk_cache_gives_the_computed_hash_and_misses_after_any_edit(tree, tmp_path, monkeypatch):
    """$NONDET_CODEHASH_CACHE (set by tests/helpers.py for its Snakemake runs) keeps each script's
    hash in a file named by the bytes it could depend on: read back when nothing changed, never
    after an edit, cosmetic or not."""
    plain = hashes(tree)
    cache = tmp_path / "cache"
    monkeypatch.setenv(codehash.CACHE_ENV, str(cache))
    assert hashes(tree) == plain  # computed and written
    kept = sorted(cache.glob("*.hash"))
    assert len(kept) == len(SCRIPTS) and not list(cache.glob("*.tmp-*"))
    for path in kept:
        path.write_text("from the cache")
    assert set(hashes(tree).values()) == {"from the cache"}  # read back, not recomputed
    edit(tree / "nondet/analysis/metrics.py", "def accuracy(", "# a comment\ndef accuracy(")
    assert hashes(tree) == plain  # a cosmetic edit: every script missed the cache, same hashes
    assert len(list(cache.glob("*.hash"))) == 2 * len(SCRIPTS)
    src = (tree / "nondet/analysis/metrics.py").read_text()
    body = re.search(r"def accuracy\(.*?\n(.*?)\n\n", src, re.S).group(0)
    edit(tree / "nondet/analysis/metrics.py", body, body.replace("return ", "return 0 + ", 1))
    cached = hashes(tree)
    monkeypatch.delenv(codehash.CACHE_ENV)
    assert cached == hashes(tree) and cached["metrics"] != plain["metrics"]


def test_code_version_and_every_script_reach_the_package():
    """Each stage's hash covers the definitions it runs: the stage function and CODE_VERSION."""
    units = codehash.script_units(REPO / "workflow_scripts" / "train.py")
    assert "nondet.workflow.torch_stages:train" in units and "nondet.io.h5io:<module>" in units
    assert "nondet.training.loop:<module>" in units
    assert not any(u.startswith("nondet.analysis.metrics") for u in units)
    for s in SCRIPTS:
        assert len(codehash.script_units(REPO / "workflow_scripts" / f"{s}.py")) > 5, s


def tiny_config(**extra) -> dict:
    return {
        "replicas": 2,
        "replicas_per_job": 2,
        "dataset": {"num_samples": 600},
        "training": {"epochs": 1, "eval_every": 0},
        "models": {"linear": {"arch": "linear", "conditions": ["init"]}},
        "divergence": {"models": []},
        "stability": {"models": []},
        "mitigation": {"models": []},
        "metrics": {"bootstrap_resamples": 20},
        **extra,
    }


def planned(tree, work, config):
    import subprocess
    import sys

    import yaml

    (work / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(tree / "Snakefile"), "--directory", str(work)]
    cmd += ["--configfile", str(work / "config.yaml"), "-n"]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tree)},
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return {p.split("/")[1] for p in planned_outputs(out)}, out


@pytest.mark.slow
def test_snakemake_plans_exactly_the_stages_an_edit_can_change(tmp_path):
    """Run a tiny workflow from a copy of the repository, then edit the copy's package: a metrics
    edit plans metrics and what follows, not training; a training edit plans training; a
    docstring edit plans nothing; code_changes: warn keeps the trained files and lists them."""
    import subprocess
    import sys

    import yaml

    tree = copy_tree(tmp_path / "repo")
    work = tmp_path / "work"
    work.mkdir()
    config = tiny_config()
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(tree / "Snakefile"), "--directory", str(work)]
    cmd += ["--configfile", str(work / "config.yaml"), "--cores", "2"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    with h5py.File(work / "results/train/linear/init/chunk0.h5") as f:
        assert f.attrs["code_hash"] == hashes(tree)["train"]
    assert planned(tree, work, config)[0] == set()

    edit(tree / "nondet/analysis/metrics.py", '"""', '"""Reworded. ')  # the module docstring
    assert planned(tree, work, config)[0] == set()

    src = (tree / "nondet/analysis/metrics.py").read_text()
    body = re.search(r"def accuracy\(.*?\n(.*?)\n\n", src, re.S).group(0)
    edit(tree / "nondet/analysis/metrics.py", body, body.replace("return ", "return 0 + ", 1))
    stages, _ = planned(tree, work, config)
    assert "metrics" in stages and "tables" in stages and "train" not in stages and "data" not in stages

    edit(
        tree / "nondet/training/models.py", "import torch\n", "import torch\n\nEXTRA = 1\n"
    )  # reached by train and predict
    stages, _ = planned(tree, work, config)
    assert {"train", "predict", "metrics", "tables"} <= stages and "data" not in stages

    stages, out = planned(tree, work, {**config, "code_changes": "warn"})
    assert "train" not in stages and "predict" in stages
    assert "results/train/linear/init/chunk0.h5 (made with code" in out.stderr
    assert "snakemake --forcerun results/train/linear/init/chunk0.h5" in out.stderr
    # the command it gives retrains the file with the current code, and the warning is gone
    warn = {**config, "code_changes": "warn"}
    (work / "config.yaml").write_text(yaml.safe_dump(warn))
    rerun = subprocess.run(
        [*cmd, "--forcerun", "results/train/linear/init/chunk0.h5"], capture_output=True, text=True, env=env
    )
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    with h5py.File(work / "results/train/linear/init/chunk0.h5") as f:
        assert f.attrs["code_hash"] == hashes(tree)["train"]
    stages, out = planned(tree, work, warn)
    assert stages == set() and "code_changes: warn" not in out.stderr


@pytest.mark.slow
def test_every_hdf5_output_records_the_code_hash_its_job_was_given(tmp_path):
    import json

    from nondet.io import h5io

    h5io.set_code_hash("0123456789abcdef")
    try:
        with h5io.atomic_h5(tmp_path / "out.h5", h5io.provenance(kind="test")) as f:
            f["x"] = [1]
    finally:
        h5io.set_code_hash(None)
    with h5py.File(tmp_path / "out.h5") as f:
        assert f.attrs["code_hash"] == "0123456789abcdef"
        assert json.loads(f.attrs["provenance"])["code_hash"] == "0123456789abcdef"
    with h5io.atomic_h5(tmp_path / "plain.h5", h5io.provenance(kind="test")) as f:
        f["x"] = [1]
    with h5py.File(tmp_path / "plain.h5") as f:
        assert "code_hash" not in f.attrs  # outside a workflow job: none claimed


def test_every_rule_with_a_script_has_a_code_param():
    """A rule without it would not rerun when the package code it runs changes."""
    for path in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=rule |use rule )", path.read_text()):
            if block.startswith("rule ") and "script:" in block:
                assert re.search(r"\n        code=code\(", block), f"{path.name}: {block.splitlines()[0]}"
    for pattern in ("TRAIN", "MITIGATION_TRAIN", "BUDGET_TRAIN", "ARM_TRAIN", "FACTORIAL_TRAIN", "DIVERGENCE"):
        assert f"kept={pattern})" in "".join(p.read_text() for p in (REPO / "rules").glob("*.smk")), pattern
