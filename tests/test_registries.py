"""One vocabulary: every name the config schema allows has exactly one implementation, and the
other way round. Each registry below is the one place its concept is listed in code; the schema
(nondet/config.schema.yaml) repeats the names as enums so a config is checked before any job
runs, and this test keeps the two in step (adding a name to one and not the other fails here)."""

import inspect

import pytest

from nondet import seeds
from nondet.io import datasets
from nondet.methods import TTA_PRESETS
from nondet.schema import load_schema
from nondet.training import augment, models, tta
from nondet.training import replica as training
from nondet.workflow.config_checks import ARCH_PARAMS

SCHEMA = load_schema()
DEFS = SCHEMA["$defs"]
PROPS = SCHEMA["properties"]
RECIPE = DEFS["recipe_props"]


def enum(node):
    return set(node["enum"])


def test_sources_and_conditions():
    assert enum(DEFS["source"]) == set(seeds.SOURCES)
    assert enum(DEFS["varying_condition"]) == set(seeds.CONDITIONS) - {"control"}
    assert enum(DEFS["factorial_source"]) == set(seeds.FACTORIAL_SOURCES)
    assert set(seeds.FACTORIAL_SOURCES) <= set(seeds.SOURCES)
    assert all(c in seeds.CONDITIONS for c in ("control", "all"))
    # the built-in conditions named in the schema's description of models.<name>.conditions
    described = PROPS["models"]["additionalProperties"]["properties"]["conditions"]["description"]
    assert all(c in described for c in seeds.CONDITIONS)
    # divergence twins: one count per source a twin can change
    twins = PROPS["divergence"]["properties"]["twins"]["properties"]
    assert set(twins) <= set(seeds.SOURCES)


def test_architectures_and_their_params():
    assert set(ARCH_PARAMS) == set(models.ARCHITECTURES)
    for arch, defaults in ARCH_PARAMS.items():
        sig = inspect.signature(models.ARCHITECTURES[arch])
        accepted = {k: p.default for k, p in sig.parameters.items() if k not in ("in_shape", "num_classes")}
        assert set(defaults) == set(accepted), arch
        for key, value in defaults.items():
            assert list(value) == list(accepted[key]) if isinstance(value, list) else value == accepted[key]
    # every built-in arch's params are validated by the schema (models.<name>.allOf if/then)
    rules = PROPS["models"]["additionalProperties"]["allOf"]
    routed = {r["if"]["properties"]["arch"]["const"]: r["then"]["properties"]["params"]["$ref"] for r in rules}
    assert routed == {a: f"#/$defs/params_{a}" for a in models.ARCHITECTURES}
    assert enum(RECIPE["init"]) == set(models.INITS)


def test_data_sets():
    name = PROPS["dataset"]["properties"]["name"]
    assert enum(name) == set(datasets.DATASETS)


def test_recipe_vocabularies():
    assert enum(RECIPE["augment"]) == set(augment.KINDS)
    assert enum(RECIPE["schedule"]) == set(training.SCHEDULES)
    assert enum(DEFS["tta_spec"]["properties"]["kind"]) == set(tta.KINDS)


def test_tta_presets():
    items = PROPS["mitigation"]["properties"]["tta"]["oneOf"][1]["items"]["oneOf"]
    names = next(enum(i) for i in items if i.get("type") == "string")
    assert names == set(TTA_PRESETS)
    for spec in TTA_PRESETS.values():
        assert spec["kind"] in tta.KINDS


@pytest.mark.parametrize("arch", sorted(ARCH_PARAMS))
def test_schema_rejects_an_unknown_param_of_each_arch(arch):
    from nondet.workflow.config import ConfigError, validate

    config = {"models": {"m": {"arch": arch, "conditions": ["init"], "params": {"no_such_param": 1}}}}
    with pytest.raises(ConfigError, match=r"models\.m\.params\.no_such_param: unknown key"):
        validate(config)


def test_the_schema_parses_the_same_with_libyaml_as_with_the_pure_python_parser():
    """nondet.schema parses the schema with libyaml's loader where PyYAML has it (about ten times
    faster; every Snakemake invocation parses it): the same document as the reference parser."""
    import yaml

    from nondet import schema

    assert schema.SAFE_LOADER is yaml.CSafeLoader  # the pinned PyYAML wheels are built with libyaml
    assert schema.cached_schema() == yaml.safe_load(schema.SCHEMA_PATH.read_text())
