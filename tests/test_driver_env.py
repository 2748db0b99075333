"""envs/driver.yaml, the Snakemake driver's own environment: the Snakefile parses and plans
(`snakemake -n`, default config and configs/paper.yaml through --profile gpu) with only the
packages it names and what they depend on; any other import fails as it would in that env."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter: every top-level module outside the stdlib, nondet and the
# distributions of envs/driver.yaml (with their requirements, from the installed metadata) is
# refused at import, as if it were not installed.
ONLY_DRIVER_PACKAGES = r"""
import importlib.abc, importlib.metadata as md, sys
from packaging.requirements import Requirement
import yaml

env = yaml.safe_load(open(sys.argv[1]))
roots = [p.split("==")[0] for d in env["dependencies"] if isinstance(d, dict) for p in d["pip"]]
seen, todo = set(), list(roots)
while todo:
    name = todo.pop()
    key = name.lower().replace("_", "-")
    if key in seen:
        continue
    seen.add(key)
    for r in md.requires(name) or []:
        req = Requirement(r)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            todo.append(req.name)
norm = lambda d: d.lower().replace("_", "-")
allowed = {m for m, ds in md.packages_distributions().items() if any(norm(d) in seen for d in ds)}
allowed |= set(sys.stdlib_module_names) | {"nondet"}
refused = []

class OnlyDriver(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.split(".")[0]
        if top not in allowed and not top.startswith("_sysconfigdata"):
            refused.append(top)
            raise ImportError(f"{name} is not in envs/driver.yaml")

sys.meta_path.insert(0, OnlyDriver())
from snakemake.cli import main
try:
    main(sys.argv[2:])
except SystemExit as e:
    print("REFUSED", sorted(set(refused)))
    sys.exit(e.code)
"""


def driver_packages() -> set[str]:
    env = yaml.safe_load((REPO / "envs/driver.yaml").read_text())
    return {p.split("==")[0] for d in env["dependencies"] if isinstance(d, dict) for p in d["pip"]}


def test_driver_env_names_snakemake_the_slurm_plugin_and_the_parse_time_imports():
    assert {"snakemake", "snakemake-executor-plugin-slurm", "numpy", "h5py", "jsonschema", "pyyaml"} == (
        driver_packages()
    )
    assert "torch" not in driver_packages()


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [[], ["--profile", "gpu", "--configfile", str(REPO / "configs/paper.yaml")]],
    ids=["default", "paper-slurm-profile"],
)
def test_snakefile_parses_and_plans_with_only_the_driver_env(tmp_path, args):
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    cmd = [sys.executable, "-c", ONLY_DRIVER_PACKAGES, str(REPO / "envs/driver.yaml")]
    cmd += ["--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), "-n", "--quiet", *args]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    refused = out.stdout.rsplit("REFUSED", 1)[1]
    for needed in ("numpy", "h5py", "jsonschema", "yaml", "snakemake_executor_plugin_slurm"):
        assert needed not in refused


@pytest.mark.slow
def test_the_blocker_refuses_what_the_driver_env_lacks(tmp_path):
    """The check can fail: torch (not in the driver env) is refused."""
    code = ONLY_DRIVER_PACKAGES.split("from snakemake.cli import main")[0] + "import torch\n"
    out = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "envs/driver.yaml")], capture_output=True, text=True, timeout=120
    )
    assert out.returncode != 0 and "torch is not in envs/driver.yaml" in out.stderr
