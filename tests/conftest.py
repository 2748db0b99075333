import functools
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch  # imported here, not in a test: its first import runs `ldconfig -p`, a subprocess

if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers on two cores, each also running Snakemake jobs: torch's default of one thread
    # per core would oversubscribe them, and its waiting threads spin (the fast tier took 302 s
    # instead of 99 s on two workers of a busy 2-core machine)
    torch.set_num_threads(1)

from nondet.io.formats import make_mnist1d
from nondet.training.data import from_arrays


@pytest.fixture(scope="session")
def small_data():
    """A small mnist1d (480 train / 120 test), generated locally."""
    return from_arrays("mnist1d", make_mnist1d(seed=3, num_samples=600))


@pytest.fixture
def recipe():
    return {
        "epochs": 2,
        "batch_size": 64,
        "lr": 0.2,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 1e-2,
        "warmup_epochs": 0,
        "cycles": 1,
        "augment": "shift",
        "augment_size": 2,
        "kernels_cpu_standin": True,
        "eval_every": 1,
    }


@pytest.fixture
def cnn_spec():
    return {"arch": "cnn1d", "channels": 8, "kernels": [5, 3, 3], "dropout": 0.1}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The finished workflow run of tests/shared_run.py's TINY config, report included: built
    once per session, across pytest-xdist workers too. Read-only: a test that changes a file or
    runs a job in it works on `shared_run.copy_run(tiny_run, tmp_path / "run")`."""
    import shared_run

    return shared_run.shared_once(tmp_path_factory, "tiny-run", shared_run.build_tiny)


def rng(seed=0):
    return np.random.default_rng(seed)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """A test without `@pytest.mark.slow` belongs to `make test-fast`, which promises tests that
    start no subprocess (no Snakemake, no script, no `python -m`). Starting one anyway, in the test
    or in any fixture it sets up, fails it at once with the fix, so the fast tier cannot slowly
    fill up with workflow runs."""
    if item.get_closest_marker("slow") is not None:
        return (yield)
    import subprocess

    def refuse(self, args, *rest, **kwargs):
        raise AssertionError(
            f"{item.nodeid} starts a subprocess ({args!r}); mark it @pytest.mark.slow "
            "(or its whole module with `pytestmark = pytest.mark.slow`)"
        )

    original = subprocess.Popen.__init__
    subprocess.Popen.__init__ = refuse
    try:
        return (yield)
    finally:
        subprocess.Popen.__init__ = original


@functools.lru_cache(maxsize=None)
def shares_a_fixture(path: Path) -> bool:
    """Whether a test file defines a module- or class-scoped fixture (a finished workflow run that
    several of its tests read)."""
    return re.search(r"scope=[\"'](module|class)[\"']", path.read_text()) is not None


def pytest_xdist_make_scheduler(config, log):
    """`make test` runs the slow tier on two pytest-xdist workers, which hand out single tests. A
    module-scoped fixture would then be set up once per worker that gets one of its tests: its
    Snakemake run twice. So a file that defines one is handed out whole, its tests run one after
    another on one worker as without xdist; any other test goes alone. (xdist's own
    `--dist loadgroup` marks do not group with pytest 9.2: xdist 3.8 renames `item._nodeid`, which
    pytest 9 no longer reads, so each worker set up each shared run.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByFixtureFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(config.rootpath, nodeid)

    # hand the units out in collection order, which pytest_collection_modifyitems made longest
    # first (xdist would sort them by their number of tests)
    config.option.loadscopereorder = False
    return ByFixtureFile(config, log)


def xdist_scope(root: Path, nodeid: str) -> str:
    """The unit a worker gets a test in: its file if the file shares a fixture, else the test."""
    file = nodeid.split("::", 1)[0]
    return file if shares_a_fixture(root / file) else nodeid


# --- the order the workers take the tests in ------------------------------------------------------

DURATIONS = Path(__file__).with_name("durations.json")  # seconds per test, from a measured run


def pytest_addoption(parser):
    parser.addoption(
        "--store-durations",
        action="store_true",
        help=f"write each test's measured seconds (setup, call and teardown) to {DURATIONS.name}, "
        "which orders the units the xdist workers take, longest first",
    )


def known_durations(path: Path = DURATIONS) -> dict[str, float]:
    return json.loads(path.read_text()) if path.is_file() else {}


def longest_first(nodeids: list[str], slow: set[str], durations: dict[str, float], scope) -> list[str]:
    """``nodeids`` with the units a worker takes (``scope(nodeid)``) ordered by their summed
    seconds, longest first; a test without a measurement counts 10 s if slow, else 0.1 s. Two
    workers taking units in this order finish close together (the longest-processing-time rule):
    a long run started last would leave one core idle until it ends. Within a unit, the order
    stays."""
    cost: dict[str, float] = {}
    first: dict[str, int] = {}
    for i, nodeid in enumerate(nodeids):
        unit = scope(nodeid)
        cost[unit] = cost.get(unit, 0.0) + durations.get(nodeid, 10.0 if nodeid in slow else 0.1)
        first.setdefault(unit, i)
    return sorted(nodeids, key=lambda n: (-cost[scope(n)], first[scope(n)]))


def pytest_collection_modifyitems(config, items):
    if not hasattr(config, "workerinput"):  # not an xdist worker: keep the files' order
        return
    slow = {item.nodeid for item in items if item.get_closest_marker("slow") is not None}
    order = longest_first(
        [item.nodeid for item in items], slow, known_durations(), lambda n: xdist_scope(config.rootpath, n)
    )
    position = {nodeid: i for i, nodeid in enumerate(order)}
    items.sort(key=lambda item: position[item.nodeid])


_measured: dict[str, float] = {}


def pytest_runtest_logreport(report):
    _measured[report.nodeid] = _measured.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
    config = session.config
    if not config.getoption("--store-durations") or hasattr(config, "workerinput"):
        return
    durations = {**known_durations(), **{k: round(v, 2) for k, v in _measured.items()}}
    DURATIONS.write_text(json.dumps(dict(sorted(durations.items())), indent=0) + "\n")
