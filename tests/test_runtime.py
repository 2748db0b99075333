"""The one adapter of the rule scripts (nondet.workflow.runtime.run_stage): outputs, params and
the log reach the stage by name, the code hash is recorded, and nothing is passed twice."""

import ast
import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest
from snakemake.iocontainers import Namedlist

from nondet.io import h5io
from nondet.workflow.runtime import run_stage, stage


def rule(inputs=(), outputs=None, params=None, log=("logs/x.log",)):
    """What Snakemake hands a rule script, as far as the adapter reads it."""
    named = lambda d: Namedlist(fromdict=d) if isinstance(d, dict) else Namedlist(list(d))  # noqa: E731
    return SimpleNamespace(
        input=Namedlist(list(inputs)),
        output=named(outputs or {}),
        params=named({"code": "c0de", **(params or {})}),
        log=Namedlist(list(log)),
    )


@pytest.fixture
def code_hash():
    yield
    h5io.set_code_hash(None)


def test_named_outputs_params_and_log_reach_the_stage_by_name(code_hash):
    calls = []

    @stage
    def table(metric_paths, csv_path, md_path, log_path=None, expect=None, labels=None):
        calls.append((metric_paths, csv_path, md_path, log_path, expect, labels))

    snake = rule(["a.h5", "b.h5"], {"csv": "t.csv", "md": "t.md"}, {"expect": {"k": 1}, "other": 2})
    run_stage(snake, table)
    # inputs as one list; "other" and "code" are not parameters of the stage: not passed
    assert calls == [(["a.h5", "b.h5"], "t.csv", "t.md", "logs/x.log", {"k": 1}, None)]
    assert h5io.CODE_HASH == "c0de"  # what every output of the job records in its provenance


def test_what_the_script_gives_is_not_taken_from_the_rule_again(code_hash):
    calls = []

    def provenance(config, csv_path, log_path=None, files=()):
        calls.append((config, csv_path, log_path, files))

    snake = rule(["t.csv"], ["p.csv"], {"config": {"seed": 1}})
    run_stage(snake, provenance, csv_path="p.csv", files=["t.csv"])
    run_stage(snake, provenance, {"seed": 2}, "p.csv")  # config given: the param is not passed too
    assert calls == [({"seed": 1}, "p.csv", "logs/x.log", ["t.csv"]), ({"seed": 2}, "p.csv", "logs/x.log", ())]


#: params that exist only for Snakemake's rerun tracking (a new value reruns the job), read by no stage
RERUN_ONLY = {"code", "code_version", "content"}


def _stage_of(script: Path):
    """(the stage function a rule script hands to run_stage, imported, or None; the names the
    script reads params by: snakemake.params.x, or x after `p = snakemake.params`)."""
    import importlib

    tree = ast.parse(script.read_text())
    imported = {a.asname or a.name: n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    aliases = {"snakemake.params"} | {
        t.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and ast.unparse(n.value) == "snakemake.params"
        for t in n.targets
    }
    read = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and ast.unparse(n.value) in aliases}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "run_stage":
            name = node.args[1].id
            return getattr(importlib.import_module(imported[name]), name), read
    return None, read


@pytest.mark.slow  # loading the workflow runs `which sacct` (the SLURM plug-in)
def test_every_param_of_a_rule_reaches_its_stage():
    """run_stage passes a param only to a stage parameter of the same name, so a param renamed on
    one side would be dropped silently (an `expect` the stage then never checks): every param a
    rule declares is taken by its stage's signature, read by its script by name, or one of the
    rerun-only params."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import OutputSettings, ResourceSettings

    repo = Path(__file__).resolve().parent.parent
    checked, dropped = 0, []
    with SnakemakeApi(OutputSettings(quiet=True)) as api:
        wf = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=repo / "Snakefile", workdir=repo)
        for r in wf._workflow.rules:
            if not r.script:
                continue
            script = (repo / "rules" / r.script).resolve()
            fn, read = _stage_of(script)
            if fn is None:  # a script of its own (train, divergence, own-script jobs) reads params itself
                continue
            taken = inspect.signature(fn).parameters
            for name in r.params._names:
                checked += 1
                if name not in RERUN_ONLY and name not in taken and name not in read:
                    dropped.append(f"rule {r.name}: param {name!r} reaches neither {fn.__name__}() nor {script.name}")
    assert checked > 30 and not dropped, dropped


SCRIPTS = sorted((Path(__file__).resolve().parent.parent / "workflow_scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_workflow_script_ends_its_job_with_end_job(script):
    """The last statement of a rule script is end_job() at module level (a stage that raised
    never reaches it), so each job skips the interpreter's teardown of torch and scipy."""
    last = ast.parse(script.read_text()).body[-1]
    assert isinstance(last, ast.Expr) and isinstance(last.value, ast.Call), f"{script.name}: end with end_job()"
    assert ast.unparse(last.value) == "end_job()", f"{script.name} ends with {ast.unparse(last)}, not end_job()"


@pytest.mark.slow  # starts a Python process
def test_end_job_flushes_what_was_written_and_exits_with_status_0(tmp_path):
    """What a job printed (block-buffered into a pipe) and logged is out when the process ends,
    the status is 0, and nothing after end_job() runs."""
    import os
    import subprocess
    import sys

    code = (
        "from nondet.workflow.runtime import end_job, get_logger\n"
        "get_logger('job.log').info('logged')\n"
        "print('printed', end='')\n"
        "end_job()\n"
        "print('after')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout block-buffered
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "printed" and "logged" in out.stderr
    assert "logged" in (tmp_path / "job.log").read_text()
