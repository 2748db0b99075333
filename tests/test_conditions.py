"""Config-defined conditions: any set of sources varying together, as diversity-table rows."""

import pytest

from nondet.analysis.tables import diversity_frame  # noqa: E402
from nondet.seeds import SOURCES, ReplicaSeeds, replica_seeds
from nondet.workflow import config as cfg
from nondet.workflow import plan

BASE = {
    "replicas": 4,
    "replicas_per_job": 4,
    "conditions": {
        "shuffle_kernels": ["shuffle", "kernels"],
        "shuffle_augment_kernels": ["shuffle", "augment", "kernels"],
        "same_as_all": ["init", "shuffle", "augment", "dropout", "kernels", "data"],
    },
    "models": {
        "m": {
            "arch": "mlp",
            "params": {"dropout": 0.1},
            "conditions": ["control", "shuffle_kernels", "shuffle_augment_kernels", "same_as_all"],
        }
    },
}


def seeds_of(c, condition):
    job = plan.train_job(c, "m", condition, 0)
    if "seeds" in job:
        return [ReplicaSeeds(**s) for s in job["seeds"]]
    return [replica_seeds(condition, r, job["base_seed"]) for r in job["replicas"]]


@pytest.mark.parametrize("condition", ["shuffle_kernels", "shuffle_augment_kernels"])
def test_combined_condition_varies_exactly_its_sources(condition):
    c = cfg.validate(BASE)
    seeds, control = seeds_of(c, condition), seeds_of(c, "control")[0]
    varied = set(BASE["conditions"][condition])
    for source in SOURCES:
        values = [getattr(s, source) for s in seeds]
        if source in varied:
            assert len(set(values)) == len(values) and None not in values, source
            assert getattr(control, source) not in values  # none is the control's seed
        else:
            assert values == [getattr(control, source)] * len(values), source
    assert not any(s.deterministic for s in seeds)  # both vary the kernels
    assert plan.train_job(c, "m", condition, 0)["sources"] == sorted(varied)  # in the job spec


def test_a_condition_of_alls_sources_draws_alls_seeds():
    c = cfg.validate(BASE)
    job = plan.train_job(c, "m", "same_as_all", 0)
    assert seeds_of(c, "same_as_all") == [replica_seeds("all", r, 0) for r in job["replicas"]]


@pytest.mark.parametrize(
    "change, key",
    [
        ({"conditions": {"all": ["init"]}}, "conditions.all"),
        ({"conditions": {"x": ["seeds"]}}, "conditions.x.0"),
        ({"conditions": {"x-y": ["init"]}}, "conditions"),
        ({"models": {"m": {"arch": "linear", "conditions": ["control", "nope"]}}}, "models.m.conditions.1"),
        (
            {"conditions": {"d": ["dropout"]}, "models": {"m": {"arch": "linear", "conditions": ["d"]}}},
            "models.m.conditions",
        ),
    ],
)
def test_condition_errors_name_the_key(change, key):
    with pytest.raises(cfg.ConfigError, match=key.replace(".", r"\.")):
        cfg.validate({**BASE, **change})


def test_table_orders_config_conditions_after_built_ins_in_given_order():
    rows = [
        {"model": "m", "condition": c, "n_replicas": 2}
        for c in ["shuffle_augment_kernels", "all", "shuffle_kernels", "control", "bitflip"]
    ]
    from nondet.analysis.tables import COLUMNS

    df = diversity_frame([{**dict.fromkeys(COLUMNS, 0.0), **r} for r in rows])
    assert list(df["condition"]) == ["control", "all", "bitflip", "shuffle_augment_kernels", "shuffle_kernels"]
