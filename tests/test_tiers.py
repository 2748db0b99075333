"""tests/conftest.py's two hooks for the test tiers, on a throw-away test file run in-process."""

from pathlib import Path

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()

SHARED = """
import pytest

@pytest.fixture(scope="module")
def finished_run():
    return 1

def test_reads_the_run(finished_run):
    assert finished_run

def test_reads_it_too(finished_run):
    assert finished_run

def test_stands_alone():
    pass
"""


def test_tests_sharing_a_module_fixture_are_grouped_for_xdist(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_shared=SHARED)
    items, _ = pytester.inline_genitems()
    groups = {i.name: [m.args[0] for m in i.iter_markers("xdist_group")] for i in items}
    assert groups == {
        "test_reads_the_run": ["test_shared.py"],
        "test_reads_it_too": ["test_shared.py"],
        "test_stands_alone": [],  # handed out alone: either worker may take it
    }


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
