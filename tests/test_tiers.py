"""tests/conftest.py's hooks for the test tiers, on throw-away test files."""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()
SHARED_RUN = (Path(__file__).parent / "shared_run.py").read_text()

SHARED = """
import pytest

@pytest.fixture(scope="module")
def finished_run():
    with open("setups.txt", "a") as f:
        f.write("setup ")
    return 1

def test_reads_the_run(finished_run):
    assert finished_run

def test_reads_it_too(finished_run):
    assert finished_run

def test_stands_alone():
    pass
"""


def test_xdist_hands_out_a_file_with_a_shared_fixture_whole_and_other_tests_alone(pytestconfig):
    from conftest import xdist_scope

    shared = "tests/test_budget.py::test_tiny_study_builds_its_table_and_figure"  # study, scope="module"
    alone = "tests/test_cifar.py::test_paper_slice_runs_on_cpu"
    # the session's shared run (tiny_run) is not a module fixture: its users may go to either worker
    on_tiny_run = "tests/test_workflow.py::test_end_to_end_outputs"
    assert xdist_scope(pytestconfig.rootpath, shared) == "tests/test_budget.py"
    assert xdist_scope(pytestconfig.rootpath, alone) == alone
    assert xdist_scope(pytestconfig.rootpath, on_tiny_run) == on_tiny_run


@pytest.mark.slow
def test_a_module_fixture_is_set_up_once_on_two_workers(pytester):
    """The run itself: two xdist workers, a module fixture three tests share, one setup."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_shared=SHARED)
    pytester.makepyfile(
        test_other="import pytest\n\n@pytest.mark.parametrize('i', range(6))\ndef test_b(i):\n    pass\n"
    )
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=9)
    assert (pytester.path / "setups.txt").read_text().count("setup") == 1


SESSION = """
import os, time
from pathlib import Path

import pytest
from shared_run import shared_once

def build(work):
    with open(Path(os.environ["SETUPS"]), "a") as f:
        f.write("build ")
    time.sleep(1)  # long enough for the other worker to ask meanwhile
    if os.environ.get("BREAK"):
        raise RuntimeError("the build broke")
    (work / "made").write_text("run")

@pytest.fixture(scope="session")
def shared(tmp_path_factory):
    return shared_once(tmp_path_factory, "run", build)
"""

USES = """
import os

def test_{0}_{1}(shared):
    assert (shared / "made").read_text() == "run"
    with open(os.environ["WORKERS"], "a") as f:
        f.write(os.environ.get("PYTEST_XDIST_WORKER", "none") + " ")
"""


def run_session_fixture_on_two_workers(pytester, monkeypatch, broken=False):
    pytester.makeconftest(CONFTEST + SESSION)
    pytester.makepyfile(shared_run=SHARED_RUN, helpers="")
    pytester.makepyfile(**{f"test_{i}": "".join(USES.format(i, j) for j in range(3)) for i in range(4)})
    monkeypatch.setenv("SETUPS", str(pytester.path / "setups.txt"))
    monkeypatch.setenv("WORKERS", str(pytester.path / "workers.txt"))
    if broken:
        monkeypatch.setenv("BREAK", "1")
    return pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")


@pytest.mark.slow
def test_a_session_fixture_is_built_once_for_both_workers_and_its_users_go_to_either(pytester, monkeypatch):
    """tests/shared_run.py's shared_once: the second worker waits on the lock, then reuses the run."""
    result = run_session_fixture_on_two_workers(pytester, monkeypatch)
    result.assert_outcomes(passed=12)
    assert (pytester.path / "setups.txt").read_text().split() == ["build"]
    assert set((pytester.path / "workers.txt").read_text().split()) == {"gw0", "gw1"}


@pytest.mark.slow
def test_a_failed_shared_build_fails_every_test_using_it_once_built(pytester, monkeypatch):
    """No retry per test, no hang: the failure is recorded beside the run and each user reports it."""
    result = run_session_fixture_on_two_workers(pytester, monkeypatch, broken=True)
    result.assert_outcomes(errors=12)
    assert (pytester.path / "setups.txt").read_text().split() == ["build"]
    assert "the build broke" in result.stdout.str()
    assert result.stdout.str().count("failed to build") >= 1  # the other worker's tests name the cause


def test_an_unmarked_test_that_starts_a_subprocess_fails_naming_the_marker(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_sub="""
import subprocess, sys
import pytest

def test_unmarked():
    subprocess.run([sys.executable, "-c", "pass"])

@pytest.mark.slow
def test_marked():
    pass
"""
    )
    pytester.makeini("[pytest]\nmarkers =\n    slow: starts a subprocess\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_unmarked starts a subprocess*mark it @pytest.mark.slow*"])


def test_units_go_out_longest_first_and_a_units_tests_stay_together():
    from conftest import longest_first

    nodeids = ["f.py::a1", "g.py::b", "h.py::c", "f.py::a2", "i.py::d"]
    units = {"f.py::a1": "f.py", "f.py::a2": "f.py"}  # f.py shares a fixture: one unit
    durations = {"f.py::a1": 6.0, "f.py::a2": 4.0, "g.py::b": 12.0, "h.py::c": 0.5}
    order = longest_first(nodeids, {"i.py::d"}, durations, lambda n: units.get(n, n))
    # b 12 s; f.py 6 + 4 = 10 s; d slow, unmeasured: 10 s, after f.py (collected later); c 0.5 s
    assert order == ["g.py::b", "f.py::a1", "f.py::a2", "i.py::d", "h.py::c"]
    assert longest_first(nodeids, set(), {}, lambda n: n)[-1] == "i.py::d"  # all 0.1 s: as collected


@pytest.mark.slow
def test_store_durations_writes_each_tests_seconds_and_keeps_the_others(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_other="import pytest\n\n@pytest.mark.parametrize('i', range(3))\ndef test_b(i):\n    pass\n"
    )
    (pytester.path / "durations.json").write_text('{"test_gone.py::test_x": 7.5}\n')
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", "--store-durations")
    result.assert_outcomes(passed=3)
    import json

    durations = json.loads((pytester.path / "durations.json").read_text())
    assert set(durations) == {"test_gone.py::test_x", *(f"test_other.py::test_b[{i}]" for i in range(3))}
    assert durations["test_gone.py::test_x"] == 7.5 and all(v >= 0 for v in durations.values())
