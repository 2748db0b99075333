"""Conda environments (envs/*.yaml), checked without conda (none is installable here):
every env parses and pins what requirements.txt pins, every rule names an env that exists, and
the rules of the torch-free analysis env do not import torch."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
ENVS = sorted((REPO / "envs").glob("*.yaml"))
RULE_FILES = [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
NO_JOB_RULES = {"all"}  # target-only rules: no job, no env


def requirements() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def env_packages(path) -> tuple[dict, dict]:
    """(conda packages, pip packages) of an env file: name -> version ('' if unpinned)."""
    env = yaml.safe_load(path.read_text())
    conda, pip = {}, {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for item in dep["pip"]:
                name, _, version = item.partition("==")
                pip[name.strip().lower()] = version.strip()
        else:
            m = re.fullmatch(r"\s*([\w.\-]+)\s*(?:==?\s*(\S+))?\s*", dep)
            conda[m.group(1).lower()] = m.group(2) or ""
    return conda, pip


def rule_envs() -> dict[str, str | None]:
    """rule name -> its conda env path (relative to the rule file's folder), from the sources."""
    out, inherits = {}, {}
    for path in RULE_FILES:
        blocks = re.split(r"^(?=(?:local)?rule \w+:|use rule \w+ as \w+)", path.read_text(), flags=re.M)
        for block in blocks:
            m = re.match(r"(?:local)?rule (\w+):", block)
            used = re.match(r"use rule (\w+) as (\w+)", block)
            if not (m or used):
                continue
            name = m.group(1) if m else used.group(2)
            env = re.search(r'^    conda:\s*\n\s+"([^"]+)"', block, re.M)
            out[name] = (path.parent / env.group(1)).resolve() if env else None
            if used and not env:  # `use rule X as Y with:` keeps X's env unless it names one
                inherits[name] = used.group(1)
    for name, parent in inherits.items():
        while parent in inherits:  # a chain of use rule (X as Y, then Y as Z)
            parent = inherits[parent]
        out[name] = out[parent]
    return out


def test_envs_exist_and_parse():
    assert {p.name for p in ENVS} >= {"torch.yaml", "analysis.yaml"}
    for path in ENVS:
        env = yaml.safe_load(path.read_text())
        assert set(env) <= {"name", "channels", "dependencies"}, path
        assert env["channels"] and "defaults" not in env["channels"], path
        conda, pip = env_packages(path)
        assert conda.get("python") == "3.11" and "pip" in conda, path
        assert pip, path


def test_env_pins_agree_with_requirements():
    pins = requirements()
    for path in ENVS:
        _, pip = env_packages(path)
        for name, version in pip.items():
            assert name in pins, f"{path.name}: {name} is not in requirements.txt"
            assert version == pins[name], f"{path.name}: {name}=={version} != {pins[name]}"
    _, torch_env = env_packages(REPO / "envs/torch.yaml")
    assert {"torch", "torchvision", "numpy", "h5py", "mnist1d"} <= set(torch_env)
    _, analysis = env_packages(REPO / "envs/analysis.yaml")
    assert "torch" not in analysis and {"scipy", "pandas", "matplotlib"} <= set(analysis)


@pytest.mark.slow
def test_every_rule_names_an_existing_env():
    envs = rule_envs()
    listed = subprocess.run(
        [sys.executable, "-m", "snakemake", "--list-rules", "--snakefile", str(REPO / "Snakefile")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    names = set(listed.stdout.split())
    assert names == set(envs), names ^ set(envs)  # the parser saw every rule Snakemake knows
    for rule, env in envs.items():
        if rule in NO_JOB_RULES:
            continue
        assert env is not None, f"rule {rule} has no conda env"
        assert env.is_file() and env.parent == REPO / "envs", (rule, env)


BLOCK_TORCH = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('torch', 'torchvision', 'mnist1d'):
            raise ImportError(f'{name} is not in the analysis env')
sys.meta_path.insert(0, Block())
"""


def stage_modules(script: Path) -> set[str]:
    """nondet modules a workflow script imports, and those its stage function imports inside."""
    import importlib
    import inspect

    mods = set()
    for module, name in re.findall(r"from (nondet\.\w+) import (\w+)", script.read_text()):
        mods.add(module)
        source = inspect.getsource(getattr(importlib.import_module(module), name))
        mods |= {f"nondet.{m}" for m in re.findall(r"from \.(\w+) import", source)}
    return mods


@pytest.mark.slow
def test_analysis_env_rules_do_not_need_torch():
    envs = rule_envs()
    analysis = [r for r, e in envs.items() if e and e.name == "analysis.yaml"]
    assert analysis
    modules = set()
    for path in RULE_FILES:
        for block in re.split(r"^(?=rule \w+:)", path.read_text(), flags=re.M):
            m = re.match(r"rule (\w+):", block)
            script = re.search(r'^    script:\s*\n\s+"([^"]+)"', block, re.M)
            if m and m.group(1) in analysis and script:
                modules |= stage_modules((path.parent / script.group(1)).resolve())
    code = BLOCK_TORCH + "".join(f"import {m}\n" for m in sorted(modules))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    if out.returncode:
        pytest.fail(f"an analysis-env rule imports torch ({sorted(modules)}):\n{out.stderr[-2000:]}")


@pytest.mark.slow
def test_analysis_provenance_does_not_import_torch_but_torch_jobs_record_it():
    """Importing torch costs ~2 s, most of an analysis job: provenance names torch's versions only
    where the job already uses torch."""
    code = (
        "import sys\n"
        "{pre}"
        "import nondet.workflow.analysis_stages\n"
        "from nondet.io.h5io import provenance\n"
        "v = provenance(kind='metrics')['versions']\n"
        "print('torch' in sys.modules, 'torch' in v, 'scipy' in v)\n"
    )
    for pre, expect in (("", "False False True"), ("import torch\n", "True True True")):
        out = subprocess.run(
            [sys.executable, "-c", code.format(pre=pre)], capture_output=True, text=True, timeout=120, cwd=REPO
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split("\n")[-2] == expect


def test_the_gpu_profile_gives_a_gpu_to_every_training_and_prediction_rule():
    """A new torch rule must be named in profiles/gpu's TRAIN_RULES or PREDICT_RULES (the GPU job's
    runtime and memory), or SLURM runs it with a CPU job's limits."""
    text = (REPO / "profiles/gpu/config.yaml").read_text()
    listed = set()
    for name in ("TRAIN_RULES", "PREDICT_RULES"):
        listed |= set(re.findall(r'"(\w+)"', re.search(name + r" = \[([^\]]*)\]", text).group(1)))
    torch_rules = {r for r, env in rule_envs().items() if env and env.name == "torch.yaml"}
    # on the submit host or CPU only: the data set (may download), the model check, importing runs
    assert listed == torch_rules - {"dataset", "check_model", "import_runs"}


@pytest.mark.slow
def test_the_dataset_stage_makes_mnist1d_without_importing_torch(tmp_path):
    """Every job waits for the dataset job: it makes and writes the default data set without the
    torch import (~1.7 s at the head of every run)."""
    code = (
        "import sys\n"
        "from nondet.workflow import config, plan\n"
        "from nondet.workflow.analysis_stages import dataset\n"
        "c = config.validate({'dataset': {'num_samples': 300}, 'models': {'m': {'arch': 'linear', 'conditions': ['init']}}})\n"
        f"dataset({str(tmp_path / 'd.h5')!r}, plan.data_spec(c), plan.data_hash(c))\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == "False"
    assert (tmp_path / "d.h5").exists()
