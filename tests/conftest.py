import numpy as np
import pytest
import torch  # noqa: F401  imported here, not in a test: its first import runs `ldconfig -p`, a subprocess

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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """`make test` runs the slow tier on two pytest-xdist workers with `--dist loadgroup`, which
    hands out single tests. A module-scoped fixture (a finished workflow run that several tests read)
    would then be set up once per worker that gets one of its tests: twice the Snakemake run. So
    every test that uses a module- or class-scoped fixture joins its module's group, and the
    module's tests run on one worker, one after another, as without xdist. Without xdist the mark
    does nothing."""
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)
        scopes = {d[-1].scope for d in defs.name2fixturedefs.values() if d} if defs else set()
        if scopes & {"module", "class"}:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
