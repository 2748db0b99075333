"""The workflow reused as a Snakemake module from another folder (docs/snakemake.md, "Reuse as a
module"): the user's Snakefile loads the repository's config.yaml, then their own config merged
over it, and `use rule * from nondet as nondet_*` runs the whole workflow with every output in
the user's folder."""

import csv
import re
import subprocess
import sys

import pytest
import yaml
from helpers import REPO

USER_SNAKEFILE = """\
configfile: "{repo}/config.yaml"  # the repository's defaults
configfile: "my.yaml"  # mine, merged over them


module nondet:
    snakefile:
        "{repo}/Snakefile"
    config:
        config


use rule * from nondet as nondet_*
"""

MINE = {
    "experiment": "module-test",
    "replicas": 2,
    "replicas_per_job": 2,
    "dataset": {"num_samples": 300},
    "training": {"epochs": 1, "batch_size": 64},
    "models": {"cnn": None, "mlp": None, "linear": {"arch": "linear", "conditions": ["control", "init"]}},
    "metrics": {"bootstrap_resamples": 50},
    "divergence": {"models": []},
    "stability": {"models": []},
    "mitigation": {"models": []},
    "budget": {"models": []},
}


@pytest.mark.slow
def test_module_from_another_folder_merges_the_users_config_over_the_repositorys(tmp_path):
    (tmp_path / "Snakefile").write_text(USER_SNAKEFILE.format(repo=REPO))
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(MINE))
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-6000:]
    assert "nondet_train" in out.stderr and "nondet_report_pages" in out.stderr
    rows = list(csv.DictReader(open(tmp_path / "results/tables/diversity.csv")))
    assert [(r["model"], r["condition"], r["n_replicas"]) for r in rows] == [
        ("linear", "control", "2"),
        ("linear", "init", "2"),
    ]
    assert (tmp_path / "results/report/table_diversity.html").is_file()
    assert not (REPO / "results/tables/provenance.csv").exists() or (
        (REPO / "results/tables/provenance.csv").stat().st_mtime
        < (tmp_path / "results/tables/provenance.csv").stat().st_mtime
    )


@pytest.mark.slow
def test_module_users_get_the_repositorys_studies_only_by_loading_its_config(tmp_path):
    """config.yaml switches on divergence, stability, mitigation (schema default: off): a module's
    own configfile is not read, so the user's Snakefile loads it (as documented)."""
    sizes = {"replicas": 2, "replicas_per_job": 2, "models": {"linear": {"arch": "linear", "conditions": ["init"]}}}
    plans = {}
    for name, snakefile in (
        ("with", USER_SNAKEFILE),
        ("without", USER_SNAKEFILE.replace('configfile: "{repo}/config.yaml"', "")),
    ):
        work = tmp_path / name
        work.mkdir()
        (work / "Snakefile").write_text(snakefile.format(repo=REPO))
        (work / "my.yaml").write_text(yaml.safe_dump(sizes))
        out = subprocess.run(
            [sys.executable, "-m", "snakemake", "-n"], cwd=work, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        plans[name] = set(re.findall(r"^rule (nondet_\w+):", out.stdout, re.M))
    studies = {"nondet_divergence", "nondet_stability", "nondet_mitigation_table"}
    assert studies <= plans["with"]
    assert not studies & plans["without"]
