"""nondet.methods: mitigation method names parsed once, their path tags and prediction paths."""

import re
import subprocess
import sys

import pytest

from nondet.methods import BASES, Method, MethodError, predictions_path
from nondet.workflow import config as cfg
from nondet.workflow import plan, plan_methods

NAMES = [
    "plain",
    "tta",
    "snapshot",
    "snapshot+tta",
    "tta:flip",
    "tta:flip-crop25",
    "snapshot+tta:crop81",
    "tta:s_1",
    "snapshot+tta:a_b-c",
    "ema",
    "ema+tta",
    "swa",
    "swa+tta:flip",
]


@pytest.mark.parametrize("name", NAMES)
def test_name_and_tag_round_trip(name):
    m = Method.parse(name)
    assert m.name == str(m) == name
    assert Method.parse(m) is m
    assert Method.from_tag(m.tag) == m
    assert m.tag == name.replace("+", "_").replace(":", "_")
    assert m.trained_run == ("snapshot" if name.startswith("snapshot") else "plain")
    assert m.label.endswith(" + TTA") == m.tta


def test_fields_and_order():
    assert Method.parse("snapshot+tta:crop25") == Method("snapshot", tta=True, spec="crop25")
    assert Method.parse("tta") == Method(tta=True) and Method.parse("plain") == Method()
    assert Method.parse("snapshot").tta is False and Method.parse("tta:flip").snapshot is False
    assert [Method.parse(b).rank for b in BASES] == list(range(8))
    assert Method.parse("tta:zzz").rank == Method.parse("tta").rank
    assert Method.from_tag("snapshot_tta") == Method("snapshot", tta=True)
    assert Method.from_tag("tta_snapshot") == Method(tta=True, spec="snapshot")  # a spec named snapshot
    assert Method.from_tag("ema_tta_swa") == Method("ema", tta=True, spec="swa")
    assert Method.parse("swa").plugin.run == "plain" and Method.parse("snapshot+tta").trained_run == "snapshot"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "TTA",
        "ensemble",
        "snapshot:flip",
        "plain:x",
        "tta:",
        "tta:a:b",
        "tta+snapshot",
        "snapshot+tta:-x",
        "tta:a b",
        "plain+tta",
        "ema+swa",
        "swa:flip",
    ],
)
def test_bad_names_fail_naming_the_method_and_the_valid_ones(bad):
    with pytest.raises(
        MethodError, match=re.escape(f"unknown mitigation method {bad!r}; valid: plain, tta, snapshot,")
    ):
        Method.parse(bad)


def test_bad_tags_and_fields_fail():
    with pytest.raises(MethodError, match="'snap'"):
        Method.from_tag("snap")
    with pytest.raises(MethodError, match="'tta:x'; valid: tta:y"):
        Method.from_tag("tta_x", ["tta:y"])
    with pytest.raises(MethodError):
        Method("snapshot", spec="flip")  # a spec without TTA
    with pytest.raises(MethodError, match="'polyak'"):
        Method("polyak")
    with pytest.raises(MethodError):
        Method(tta=True, spec="a:b")


def test_parse_against_a_configs_methods():
    base = {
        "models": {"m": {"arch": "cnn1d", "conditions": ["all"]}},
        "mitigation": {"models": ["m"], "tta": ["flip", {"name": "s1", "kind": "shift", "size": 1}]},
    }
    c = cfg.validate(base)
    valid = plan_methods.budget_methods(c)
    assert Method.parse("snapshot+tta:s1", valid) == Method("snapshot", True, "s1")
    assert Method.parse("ema+tta:flip", valid) == Method("ema", True, "flip")
    with pytest.raises(
        MethodError, match=r"'tta:crop25'; valid: plain, tta:flip, tta:s1, snapshot, snapshot\+tta:flip"
    ):
        Method.parse("tta:crop25", valid)
    with pytest.raises(MethodError, match="'tta'; valid: plain, tta:flip"):
        plan_methods.tta_spec(c, "tta")  # a list of specs: the method names one
    with pytest.raises(MethodError, match="'tta:nope'"):
        plan_methods.tta_spec(c, "tta:nope")
    with pytest.raises(MethodError, match="'bogus'"):
        plan_methods.trained_run("bogus")


def test_predictions_paths():
    assert predictions_path() == "results/predict/{model}/{condition}/chunk{chunk}.h5"
    assert predictions_path("{method}") == "results/mitigation/predict/{model}/{condition}/{method}/chunk{chunk}.h5"
    assert (
        predictions_path("{method}", epochs="{epochs}")
        == "results/budget/{model}/{condition}/e{epochs}/predict/{method}/chunk{chunk}.h5"
    )
    assert predictions_path("snapshot+tta:flip", "cnn", "all", 3) == (
        "results/mitigation/predict/cnn/all/snapshot_tta_flip/chunk3.h5"
    )
    assert predictions_path("plain", "cnn", "all", 0, epochs=15) == "results/budget/cnn/all/e15/predict/plain/chunk0.h5"
    with pytest.raises(MethodError):
        predictions_path("tta+x")


@pytest.mark.slow
def test_methods_module_imports_nothing_heavy():
    code = "import sys, nondet.methods; print(sorted(m for m in sys.modules if m.startswith('nondet')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['nondet', 'nondet.methods']"
    code = "import sys, nondet.methods; assert not {'torch', 'numpy', 'pandas'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


TOY = {
    "experiment": "toy-method",
    "replicas": 2,
    "replicas_per_job": 2,
    "dataset": {"num_samples": 600},
    "training": {"epochs": 2, "batch_size": 64, "eval_every": 0},
    "models": {"cnn": {"arch": "cnn1d", "params": {"channels": 8}, "conditions": ["init"]}},
    "metrics": {"bootstrap_resamples": 200},
    "divergence": {"models": []},
    "stability": {"models": []},
    "mitigation": {
        "models": ["cnn"],
        "conditions": ["init"],
        "methods": ["toy", "ema"],
        "plugins": ["tests.toy_method"],
        "toy": {"cycles": 2},
        "tta": {"kind": "shift", "size": 1, "stride": 1},
    },
}


@pytest.fixture
def unregister_toy():
    """The registry is a module-level table: leave it as it was for the other tests."""
    from nondet.methods import REGISTRY

    yield
    REGISTRY.pop("toy", None)


def test_a_plugin_registers_its_schema_and_plan(unregister_toy):
    """A plug-in module listed in mitigation.plugins registers its method, its config keys
    (validated, defaults filled) and its own training run."""
    c = cfg.validate({**TOY, "mitigation": {**TOY["mitigation"], "toy": {}}})
    assert c["mitigation"]["toy"] == {"cycles": 2}
    assert list(plan_methods.mitigation_methods(c)) == ["tta", "ema", "ema+tta", "toy", "toy+tta"]  # registry order
    assert plan_methods.training_runs(c) == ["plain", "toy"]
    assert plan.run_job(c, "cnn", "init", 0, "toy")["recipe"]["cycles"] == 2
    assert "averages" not in plan.run_job(c, "cnn", "init", 0, "toy")["recipe"]
    assert plan.train_job(c, "cnn", "init", 0)["recipe"]["averages"] == {"ema": {"decay": 0.99, "bn": "recompute"}}
    with pytest.raises(cfg.ConfigError, match=r"mitigation.toy.cycles"):
        cfg.validate({**TOY, "mitigation": {**TOY["mitigation"], "toy": {"cycles": 1}}})
    with pytest.raises(cfg.ConfigError, match="mitigation.methods: unknown method 'nope'"):
        cfg.validate({**TOY, "mitigation": {**TOY["mitigation"], "methods": ["nope"]}})
    with pytest.raises(cfg.ConfigError, match="mitigation.plugins: cannot import 'no_such_module'"):
        cfg.validate({**TOY, "mitigation": {**TOY["mitigation"], "plugins": ["no_such_module"]}})


@pytest.mark.slow
def test_toy_plugin_method_end_to_end(tmp_path, unregister_toy):
    """The toy plug-in, with EMA beside it, through the real workflow: its own run is trained,
    its rows (alone and with TTA) are in the mitigation table with its label and test passes,
    and the ensembles table counts its members."""
    import csv

    import helpers

    from nondet.io.files import load_replicas

    helpers.snakemake(
        tmp_path, "--cores", "2", "results/tables/mitigation.csv", "results/tables/ensembles.csv", config=TOY
    )
    res = tmp_path / "results"
    (toy,) = load_replicas(res / "mitigation/train/cnn/init/toy/chunk0.h5")[:1]
    assert toy["job"]["recipe"]["cycles"] == 2 and len(toy["snapshots"]) == 2
    plain = load_replicas(res / "train/cnn/init/chunk0.h5")
    assert set(plain[0]["averaged"]) == {"ema"}
    rows = list(csv.DictReader(open(res / "tables/mitigation.csv")))
    assert [r["method"] for r in rows] == ["plain", "tta", "ema", "ema+tta", "toy", "toy+tta"]
    assert [r["test_passes"] for r in rows] == ["1", "3", "1", "3", "2", "6"]
    assert rows[4]["label"] == "toy: the last cycles' weights of a cyclic run"
    assert rows[5]["label"].endswith("+ TTA")
    assert "toy+tta" in (res / "tables/mitigation.md").read_text()
    ens = {r["method"]: r for r in csv.DictReader(open(res / "tables/ensembles.csv"))}
    assert ens["toy"]["models_averaged"] == "2" and ens["ema"]["models_averaged"] == "1"
