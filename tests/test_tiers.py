"""tests/conftest.py's hooks for the test tiers, on throw-away test files."""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()

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

    shared = "tests/test_workflow.py::test_end_to_end_outputs"  # finished_run, scope="module"
    alone = "tests/test_cifar.py::test_paper_slice_runs_on_cpu"
    assert xdist_scope(pytestconfig.rootpath, shared) == "tests/test_workflow.py"
    assert xdist_scope(pytestconfig.rootpath, alone) == alone


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
