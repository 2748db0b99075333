import numpy as np
import pytest

from nondet.training.data import from_arrays, make_mnist1d


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
