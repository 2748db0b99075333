import copy

import pytest
import yaml

from nondet import config as cfg

with open("config.yaml") as f:
    DEFAULT = yaml.safe_load(f)


def broken(**changes):
    c = copy.deepcopy(DEFAULT)
    for path, value in changes.items():
        node = c
        keys = path.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return c


def test_default_config_is_valid_and_filled():
    c = cfg.validate(DEFAULT)
    assert c["training"]["epochs"] == DEFAULT["training"]["epochs"]
    assert cfg.groups(c)[0] == ("cnn", "control")
    assert len(cfg.groups(c)) == sum(len(m["conditions"]) for m in DEFAULT["models"].values())


def test_defaults_fill_a_minimal_config():
    c = cfg.validate({"models": {"m": {"arch": "linear", "conditions": ["init"]}}})
    assert c["replicas"] == 8 and c["training"]["lr"] == 0.2 and c["metrics"]["seed"] == 0


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"trainig": {}}, "trainig"),
        ({"training__epochs": "ten"}, "training.epochs"),
        ({"training__epochs": 0}, "training.epochs"),
        ({"training__lr": -1}, "training.lr"),
        ({"training__learning_rate": 0.1}, "learning_rate"),
        ({"replicas": 1}, "replicas"),
        ({"device": "tpu"}, "device"),
        ({"models__cnn__conditions": ["control", "seeds"]}, "models.cnn.conditions.1"),
        ({"models__cnn__arch": "transformer"}, "models.cnn.arch"),
        ({"models__linear__conditions": ["dropout"]}, "models.linear.conditions"),
        ({"models__cnn__params": {"width": 3}}, "models.cnn.params.width"),
        ({"overrides": {"resnet9": {"init": {"epochs": 3}}}}, "overrides.resnet9"),
        ({"overrides": {"linear": {"dropout": {"epochs": 3}}}}, "overrides.linear.dropout"),
        ({"overrides": {"cnn": {"all": {"epoch": 3}}}}, "epoch"),
        ({"training__cycles": 4}, "cycles"),
        ({"dataset__name": "imagenet"}, "dataset.name"),
        ({"metrics__bootstrap_resamples": -5}, "metrics.bootstrap_resamples"),
        ({"instability__models": ["resnet9"]}, "instability.models"),
        ({"mitigation__conditions": ["dropout2"]}, "mitigation.conditions.0"),
        ({"mitigation__snapshot_cycles": 4}, "mitigation.snapshot_cycles"),
        ({"mitigation__conditions": ["dropout"], "mitigation__models": ["mlp"]}, "mitigation.conditions"),
    ],
)
def test_invalid_config_names_the_key(changes, message):
    with pytest.raises(cfg.ConfigError) as err:
        cfg.validate(broken(**changes))
    assert message in str(err.value)


def test_recipe_overrides_apply_in_order_and_change_only_their_job():
    c = broken(overrides={"cnn": {"init": {"epochs": 3}}})
    c["models"]["cnn"]["training"] = {"lr": 0.1}
    c = cfg.validate(c)
    assert cfg.recipe(c, "cnn", "init")["epochs"] == 3
    assert cfg.recipe(c, "cnn", "init")["lr"] == 0.1
    assert cfg.recipe(c, "cnn", "all")["epochs"] == DEFAULT["training"]["epochs"]
    base = cfg.validate(DEFAULT)
    assert cfg.train_job(c, "cnn", "init", 0) != cfg.train_job(base, "cnn", "init", 0)
    assert cfg.train_job(base, "linear", "all", 0) == cfg.train_job(
        cfg.validate(broken(overrides={"cnn": {"init": {"epochs": 3}}})), "linear", "all", 0
    )


def test_chunks_cover_every_replica_once():
    c = cfg.validate(broken(replicas=7, replicas_per_job=3))
    assert cfg.chunks(c) == [[0, 1, 2], [3, 4, 5], [6]]
