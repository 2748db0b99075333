"""The data source: each replica of a condition that varies it trains on its own resample of the
training set (nondet.training.resample); every other condition trains on the full set, as before."""

import numpy as np
import pytest
import torch

from nondet.seeds import CONDITIONS, derive_seed, replica_seeds, torch_generator
from nondet.training.predict import predict
from nondet.training.recipe import Bookkeeping, TrainRun
from nondet.training.replica import ReplicaDraws, train_replica
from nondet.training.resample import replica_index, resample_index
from nondet.workflow import config as cfg
from nondet.workflow import plan

CPU = torch.device("cpu")


def epoch_indices(seeds, recipe, n, epoch=0):
    return ReplicaDraws(seeds, recipe, n, CPU).order(epoch)


def test_conditions_that_do_not_vary_data_see_the_full_set_in_the_shuffle_order(recipe):
    """The base data seed is None: the full training set, in exactly the order the shuffle seed
    drew before the source existed; and the seeds' dict (job specs, provenance) has no data key."""
    for condition in CONDITIONS:
        seeds = replica_seeds(condition, 1, 0)
        if "data" in CONDITIONS[condition]:
            assert seeds.data is not None and seeds.as_dict()["data"] == seeds.data
            continue
        assert seeds.data is None and "data" not in seeds.as_dict()
        g = torch_generator(derive_seed(seeds.shuffle, 3))
        assert torch.equal(epoch_indices(seeds, recipe, 100, 3), torch.randperm(100, generator=g))


def test_data_replicas_train_on_different_bootstraps_of_the_training_set(recipe):
    n = 500
    sets = [epoch_indices(replica_seeds("data", r, 0), recipe, n).numpy() for r in range(3)]
    for s in sets:
        assert len(s) == n and s.min() >= 0 and s.max() < n
        distinct = len(np.unique(s)) / n
        assert 0.55 < distinct < 0.72  # a bootstrap holds about 63 % of the examples
    assert not np.array_equal(np.sort(sets[0]), np.sort(sets[1]))
    assert not np.array_equal(np.sort(sets[1]), np.sort(sets[2]))
    # the set is the data seed's; the order within an epoch is the shuffle seed's
    a, b = (epoch_indices(replica_seeds("data", 0, 0), recipe, n, e).numpy() for e in (0, 1))
    assert np.array_equal(np.sort(a), np.sort(b)) and not np.array_equal(a, b)


def test_subsample_draws_distinct_examples_of_the_given_fraction(recipe):
    spec = {"kind": "subsample", "fraction": 0.25}
    s = epoch_indices(replica_seeds("data", 0, 0), {**recipe, "resample": spec}, 400).numpy()
    assert len(s) == 100 == len(np.unique(s))
    assert np.array_equal(resample_index(7, 50, "subsample", 0.5), resample_index(7, 50, "subsample", 0.5))
    assert replica_index(None, 50, spec) is None
    with pytest.raises(ValueError, match="fraction"):
        resample_index(0, 10, "bootstrap", 0.0)
    with pytest.raises(ValueError, match="data_resampling.kind"):
        resample_index(0, 10, "jackknife")


def test_data_replicas_differ_on_the_same_test_set(small_data, recipe):
    """Two data replicas of a small MLP (1 epoch, 480 examples): the same test set, different
    predictions. A few seconds."""
    test_x, test_y = small_data.x_test.clone(), small_data.y_test.clone()
    spec = {"arch": "mlp", "hidden": 32, "dropout": 0.0}
    quick = {**recipe, "epochs": 1, "augment": "none"}
    runs = [
        train_replica(
            TrainRun(spec, quick, CPU), replica_seeds("data", r, 0), small_data, Bookkeeping(log=lambda *a: None)
        )
        for r in (0, 1)
    ]
    assert torch.equal(small_data.x_test, test_x) and torch.equal(small_data.y_test, test_y)
    a, b = (predict(r["model"], small_data.x_test)[0].argmax(1) for r in runs)
    assert (a != b).float().mean() > 0


def test_plan_puts_the_resampling_in_the_jobs_that_vary_data_only():
    config = cfg.validate(
        {
            "replicas": 2,
            "data_resampling": {"kind": "subsample", "fraction": 0.5},
            "models": {"m": {"arch": "linear", "conditions": ["control", "init", "data", "all"]}},
            "factorial": {"f": {"model": "m", "sources": ["init", "data"], "levels": 2}},
        }
    )
    for condition, varies in [("control", False), ("init", False), ("data", True), ("all", True)]:
        job = plan.train_job(config, "m", condition, 0)
        assert ("resample" in job["recipe"]) == varies, condition
        if varies:
            assert job["recipe"]["resample"] == {"kind": "subsample", "fraction": 0.5}
    job = plan.factorial_job(config, "f", 0)
    assert job["recipe"]["resample"]["kind"] == "subsample"
    assert all(s["data"] is not None for s in job["seeds"])  # level 0 of data is a resample too
    # changing the resampling reruns the data-varying jobs only
    other = cfg.validate({**config, "data_resampling": {"kind": "bootstrap", "fraction": 0.5}})
    for condition, varies in [("control", False), ("data", True), ("all", True)]:
        changed = (
            plan.train_job(other, "m", condition, 0)["spec_hash"]
            != plan.train_job(config, "m", condition, 0)["spec_hash"]
        )
        assert changed == varies, condition
    with pytest.raises(cfg.ConfigError, match="data_resampling"):
        cfg.validate({**config, "data_resampling": {"kind": "jackknife"}})
