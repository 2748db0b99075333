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
