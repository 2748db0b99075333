"""The one adapter of the rule scripts (nondet.workflow.runtime.run_stage): outputs, params and
the log reach the stage by name, the code hash is recorded, and nothing is passed twice."""

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
