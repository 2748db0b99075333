"""The experiment configuration: schema validation, defaults, semantic checks, and the job plan.

Imported by the Snakefile, so it must stay light (no torch).
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import jsonschema
import yaml

from .h5io import CODE_VERSION, spec_hash
from .seeds import CONDITIONS

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")

#: Keyword arguments each architecture accepts, with their defaults (tests check these against
#: the model classes, so they cannot drift).
ARCH_PARAMS = {
    "linear": {},
    "mlp": {"hidden": 128, "dropout": 0.0, "batchnorm": True},
    "cnn1d": {"channels": 32, "kernels": [5, 3, 3], "dropout": 0.1},
    "resnet": {"blocks": 2, "width": 16, "dropout": 0.0, "shortcut": "conv"},
}


class ConfigError(ValueError):
    """The configuration is invalid; the message names the offending key."""


def load_schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _fill_defaults(node: dict, instance: dict, schema: dict) -> None:
    """Fill ``default`` values of declared properties (not inside free-form mappings)."""
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    for name, sub in node.get("properties", {}).items():
        if name not in instance and "default" in sub:
            instance[name] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(name), dict) and ("properties" in sub or sub.get("$ref") == "#/$defs/recipe"):
            _fill_defaults(sub, instance[name], schema)


# JSON Schema counts 4.0 as an integer; we do not (``replicas: 4.0`` crashed inside jobs).
_STRICT = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool)
    ),
)


def _yaml_float(text: str) -> str:
    """``1e9`` as YAML 1.1 (PyYAML, Snakemake) reads it as a float: ``1.0e+9``."""
    m = re.fullmatch(r"\s*([-+]?)(\d+)(?:\.(\d*))?[eE]([-+]?)(\d+)\s*", text)
    if not m:
        return repr(float(text))
    sign, whole, frac, esign, exp = m.groups()
    return f"{sign}{whole}.{frac or '0'}e{esign or '+'}{exp}"


def _hint(e) -> str:
    """Extra words for a schema error whose cause is a YAML trap."""
    if e.validator != "type":
        return ""
    x = e.instance
    if isinstance(x, float) and x.is_integer() and "integer" in str(e.validator_value):
        return f" (a whole number is meant: write {int(x)}, without the decimal point)"
    if isinstance(x, str):
        try:
            float(x)
        except ValueError:
            return ""
        return (
            f" (a number in quotes, or one YAML reads as a string: write {_yaml_float(x)}; "
            "values given with --config arrive as strings, so put numbers in a --configfile)"
        )
    return ""


def _non_finite(node, path=()):
    """Paths of NaN/inf numbers anywhere in the config (JSON Schema lets them through)."""
    if isinstance(node, float) and not math.isfinite(node):
        yield path, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _non_finite(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _non_finite(v, (*path, i))


def validate(config: dict) -> dict:
    """Validated copy of ``config`` with defaults filled in; raises ConfigError naming the key."""
    schema = load_schema()
    config = copy.deepcopy(dict(config))
    if isinstance(config.get("models"), dict):  # `name: null` in a later --configfile removes it
        config["models"] = {k: v for k, v in config["models"].items() if v is not None}
    bad = [f"config key {_key(p)}: {v} is not a finite number" for p, v in _non_finite(config)]
    if bad:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(bad))
    validator = _STRICT(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors[:10]:
            if e.validator == "additionalProperties":
                known = sorted(e.schema.get("properties", {}))
                extra = f" (allowed keys: {', '.join(known)})" if known else ""
                lines.append(f"config key {_key(e.absolute_path)}: {e.message}{extra}")
            else:
                lines.append(f"config key {_key(e.absolute_path)}: {e.message}{_hint(e)}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    _fill_defaults(schema, config, schema)
    _check_semantics(config)
    _check_sections(config)
    _check_comparisons(config)
    _check_runs(config)
    _check_plan_size(config)
    return config


def is_user_arch(arch: str) -> bool:
    """A researcher's own model: ``"pkg.module:callable"`` (nondet.usermodel)."""
    return ":" in str(arch)


_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"


def _check_user_model(name: str, model: dict) -> None:
    """What can be checked without importing torch or the user's code; the rest (the callable,
    its params, the module it returns, the output shape) is checked by the check_model rule."""
    import importlib.machinery
    import importlib.util
    import os
    import re

    arch, key = model["arch"], f"config key models.{name}"
    if not re.fullmatch(f"{_DOTTED}:{_DOTTED}", arch):
        raise ConfigError(
            f"{key}.arch: {arch!r} is neither a built-in architecture ({', '.join(ARCH_PARAMS)}) "
            "nor an import path 'package.module:callable'"
        )
    folder = model.get("pythonpath")
    if folder is not None and not os.path.isdir(folder):
        raise ConfigError(f"{key}.pythonpath: folder {folder!r} not found (relative to {os.getcwd()})")
    top = arch.split(":")[0].split(".")[0]
    found = importlib.machinery.PathFinder.find_spec(top, [os.path.abspath(folder)]) if folder else None
    if found is None and importlib.util.find_spec(top) is None:
        where = f"in {folder!r} nor " if folder else ""
        raise ConfigError(
            f"{key}.arch: model {name!r}: module {top!r} of {arch!r} is found neither {where}on "
            "PYTHONPATH (set models.<name>.pythonpath to the folder that holds it)"
        )


def condition_sources(config: dict, condition: str) -> frozenset:
    """The sources that vary across the replicas of ``condition`` (built-in or config's)."""
    if condition in CONDITIONS:
        return CONDITIONS[condition]
    return frozenset(config["conditions"][condition])


def _check_conditions(config: dict) -> None:
    for name in config["conditions"]:
        if name in CONDITIONS:
            raise ConfigError(
                f"config key conditions.{name}: a built-in condition has this name (built-in: {', '.join(CONDITIONS)})"
            )
    known = list(CONDITIONS) + list(config["conditions"])
    where = [(f"models.{m}.conditions", spec["conditions"]) for m, spec in config["models"].items()]
    where.append(("mitigation.conditions", config["mitigation"]["conditions"]))
    for key, names in where:
        for i, condition in enumerate(names):
            if condition not in known:
                raise ConfigError(
                    f"config key {key}.{i}: unknown condition {condition!r} (known: "
                    f"{', '.join(known)}; define new ones under the top-level conditions key)"
                )


def _check_arch_param(key: str, default, value) -> None:
    """Architecture parameters are free-form in the schema: check them against the defaults."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    else:
        ok = True
    if not ok:
        kind = {bool: "true or false", int: "a whole number", float: "a number",
                list: "a list of whole numbers"}[type(default)]  # fmt: skip
        raise ConfigError(f"config key {key}: {value!r} is not {kind} (default {default!r})")


def _check_semantics(config: dict) -> None:
    _check_conditions(config)
    for name, model in config["models"].items():
        model.setdefault("params", {})
        model.setdefault("training", {})
        if is_user_arch(model["arch"]) or model["arch"] not in ARCH_PARAMS:
            _check_user_model(name, model)
            continue
        for key in ("features", "pythonpath"):
            if key in model:
                raise ConfigError(
                    f"config key models.{name}.{key}: only for a user model (arch "
                    f"'package.module:callable'); {model['arch']!r} is built in"
                )
        allowed = ARCH_PARAMS[model["arch"]]
        for key in model["params"]:
            if key not in allowed:
                raise ConfigError(
                    f"config key models.{name}.params.{key}: unknown parameter of arch "
                    f"{model['arch']!r} (allowed: {', '.join(allowed) or 'none'})"
                )
            _check_arch_param(f"models.{name}.params.{key}", allowed[key], model["params"][key])
        params = {**allowed, **model["params"]}
        for condition in model["conditions"]:
            # "all" varies dropout only where there is some; any other condition must have it
            varies = condition != "all" and "dropout" in condition_sources(config, condition)
            if varies and not params.get("dropout", 0) > 0:
                raise ConfigError(
                    f"config key models.{name}.conditions: condition {condition!r} varies dropout, "
                    f"which cannot apply to model {name!r} ({model['arch']}, "
                    f"dropout={params.get('dropout', 0)}): it has no dropout"
                )
        if "shortcut" in params and params["shortcut"] not in ("conv", "option_a"):
            raise ConfigError(
                f"config key models.{name}.params.shortcut: {params['shortcut']!r} is not one of "
                "conv (1x1 conv + BN) or option_a (the authors' parameter-free shortcut)"
            )
        if "dropout" in params and not 0 <= params["dropout"] < 1:
            raise ConfigError(f"config key models.{name}.params.dropout: must be in [0, 1)")
    for name, per_condition in config["overrides"].items():
        if name not in config["models"]:
            raise ConfigError(f"config key overrides.{name}: unknown model (models: {', '.join(config['models'])})")
        for condition in per_condition:
            if condition not in config["models"][name]["conditions"]:
                raise ConfigError(
                    f"config key overrides.{name}.{condition}: model {name!r} does not run condition {condition!r}"
                )
    for name in config["models"]:
        for condition in config["models"][name]["conditions"]:
            r = recipe(config, name, condition)
            if r["epochs"] % r["cycles"]:
                raise ConfigError(
                    f"config key training.cycles (model {name}, {condition}): {r['cycles']} cycles "
                    f"do not divide {r['epochs']} epochs"
                )
            if r["warmup_epochs"] * r["cycles"] >= r["epochs"]:
                raise ConfigError(
                    f"config key training.warmup_epochs (model {name}, {condition}): warm-up fills the whole cycle"
                )


def _check_sections(config: dict) -> None:
    models = config["models"]
    for section in ("instability", "stability", "mitigation"):
        for name in config[section]["models"]:
            if name not in models:
                raise ConfigError(f"config key {section}.models: unknown model {name!r} (models: {', '.join(models)})")
    mit = config["mitigation"]
    tta_specs(config)  # names must be unique
    for name in mit["models"]:
        for condition in mit["conditions"]:
            if condition not in models[name]["conditions"]:
                raise ConfigError(
                    f"config key mitigation.conditions: model {name!r} does not run condition "
                    f"{condition!r} (its plain replicas are the baseline)"
                )
            epochs = recipe(config, name, condition)["epochs"]
            if epochs % mit["snapshot_cycles"]:
                raise ConfigError(
                    f"config key mitigation.snapshot_cycles: {mit['snapshot_cycles']} cycles do "
                    f"not divide the {epochs} epochs of {name}/{condition}"
                )


COMPARISON_DEFAULTS = {"replicas": 8, "condition": "all", "baseline": {}, "alpha": 0.05,
                       "power": 0.8, "effect": None}  # fmt: skip


def _check_comparisons(config: dict) -> None:
    models = config["models"]
    for section in ("comparisons", "factorial"):
        for name, spec in config[section].items():
            if spec["model"] not in models:
                raise ConfigError(
                    f"config key {section}.{name}.model: unknown model {spec['model']!r} (models: {', '.join(models)})"
                )
    for name, spec in config["comparisons"].items():
        if "condition" in spec and "sources" in spec:
            raise ConfigError(f"config key comparisons.{name}: give either condition or sources, not both")
        for key, value in COMPARISON_DEFAULTS.items():
            if not (key == "condition" and "sources" in spec):
                spec.setdefault(key, copy.deepcopy(value))  # never share the default dicts
        arch = models[spec["model"]]["arch"]
        params = {**ARCH_PARAMS.get(arch, {}), **models[spec["model"]]["params"]}
        for arm in ("baseline", "candidate"):
            spec[arm].setdefault("training", {})
            spec[arm].setdefault("params", {})
            if is_user_arch(arch):  # its params are checked against the callable before training
                continue
            for key in spec[arm]["params"]:
                if key not in ARCH_PARAMS[arch]:
                    raise ConfigError(
                        f"config key comparisons.{name}.{arm}.params.{key}: unknown parameter of "
                        f"arch {arch!r} (allowed: {', '.join(ARCH_PARAMS[arch]) or 'none'})"
                    )
                _check_arch_param(f"comparisons.{name}.{arm}.params.{key}",
                                  ARCH_PARAMS[arch][key], spec[arm]["params"][key])  # fmt: skip
            varying = spec["sources"] if "sources" in spec else [spec["condition"]]
            if "dropout" in varying and not {**params, **spec[arm]["params"]}.get("dropout"):
                raise ConfigError(f"config key comparisons.{name}.condition: {arm} has no dropout")
        if spec["baseline"] == spec["candidate"]:
            raise ConfigError(f"config key comparisons.{name}: baseline and candidate are identical")
    for name, spec in config["factorial"].items():
        spec.setdefault("levels", 3)
        if isinstance(spec["levels"], int):
            spec["levels"] = [spec["levels"]] * len(spec["sources"])
        if len(spec["levels"]) != len(spec["sources"]):
            raise ConfigError(
                f"config key factorial.{name}.levels: one number per source "
                f"({len(spec['sources'])} sources, {len(spec['levels'])} levels)"
            )
        arch = models[spec["model"]]["arch"]
        dropout = {**ARCH_PARAMS.get(arch, {}), **models[spec["model"]]["params"]}.get("dropout", 0)
        if "dropout" in spec["sources"] and not dropout and not is_user_arch(arch):
            raise ConfigError(f"config key factorial.{name}.sources: model has no dropout")


def plan_size(config: dict) -> int:
    """How many jobs the full workflow plans (an upper bound, by arithmetic: no lists built)."""
    per = config["replicas_per_job"]
    ch = -(-config["replicas"] // per)
    n = 10 + len(config["models"])  # data set, tables, figures, provenance
    n += len(groups(config)) * (2 * ch + 1)  # train + predict per chunk, metrics
    mit = config["mitigation"]
    n += len(mit["models"]) * len(mit["conditions"]) * (4 * ch + 3)  # snapshot train, 3 predicts
    n += 2 * len(config["instability"]["models"])
    for spec in config["comparisons"].values():
        n += 4 * -(-spec["replicas"] // per) + 1
    for spec in config["factorial"].values():
        n += 2 * -(-math.prod(spec["levels"]) // per) + 1
    runs = config.get("runs", {})
    n += 3 * len(runs.get("groups", {})) + len(runs.get("comparisons", {})) + 1  # imported runs
    return n


def _check_plan_size(config: dict) -> None:
    n = plan_size(config)
    if n > config["max_jobs"]:
        raise ConfigError(
            f"config key replicas: this configuration plans about {n} jobs, more than "
            f"max_jobs = {config['max_jobs']} (replicas {config['replicas']}, replicas_per_job "
            f"{config['replicas_per_job']}, {len(groups(config))} (model, condition) groups). "
            "Planning alone takes about a second per 400-700 jobs and memory grows with them: lower "
            "replicas (or comparisons/factorial sizes), raise replicas_per_job, or raise max_jobs "
            "if you really mean it."
        )


# --- the job plan -----------------------------------------------------------------------------


def groups(config: dict) -> list[tuple[str, str]]:
    """Every (model, condition) pair the experiment trains."""
    return [(m, c) for m, spec in config["models"].items() for c in spec["conditions"]]


def chunks(config: dict) -> list[list[int]]:
    """Replica indices trained by each job of a (model, condition)."""
    r, per = config["replicas"], config["replicas_per_job"]
    return [list(range(i, min(i + per, r))) for i in range(0, r, per)]


def n_chunks(config: dict) -> int:
    return -(-config["replicas"] // config["replicas_per_job"])


def recipe(config: dict, model: str, condition: str) -> dict:
    """The training recipe of (model, condition): defaults, then model, then condition overrides."""
    return {
        **config["training"],
        **config["models"][model]["training"],
        **config["overrides"].get(model, {}).get(condition, {}),
    }


def model_spec(config: dict, model: str, changes: dict | None = None) -> dict:
    """What builds the model: a built-in arch with its parameters, or a user's callable with its
    params, feature module and folder. ``changes``: parameters of a comparison arm."""
    spec = config["models"][model]
    if is_user_arch(spec["arch"]):
        out = {"arch": spec["arch"], "params": {**spec["params"], **(changes or {})}}
        return {**out, **{k: spec[k] for k in ("features", "pythonpath") if spec.get(k)}}
    return {"arch": spec["arch"], **ARCH_PARAMS[spec["arch"]], **spec["params"], **(changes or {})}


def user_models(config: dict) -> list[str]:
    """Models whose arch is a user's callable (each gets a check_model job before training)."""
    return [m for m, spec in config["models"].items() if is_user_arch(spec["arch"])]


def data_spec(config: dict) -> dict:
    return dict(config["dataset"])


def data_inputs(config: dict) -> list[str]:
    """Files the dataset rule reads that Snakemake should watch (a user's array file)."""
    spec = config["dataset"]
    return [spec["path"]] if spec["name"] == "arrays" else []


def data_hash(config: dict) -> str:
    return spec_hash(data_spec(config))


def train_job(config: dict, model: str, condition: str, chunk: int) -> dict:
    """Everything a training job depends on (a Snakemake param: changing it reruns the job)."""
    r, per = config["replicas"], config["replicas_per_job"]
    if not 0 <= chunk < n_chunks(config):
        raise ConfigError(f"chunk {chunk} does not exist ({n_chunks(config)} chunks)")
    job = {
        "experiment": config["experiment"],
        "model": model,
        "condition": condition,
        "replicas": list(range(chunk * per, min((chunk + 1) * per, r))),
        "base_seed": config["base_seed"],
        "device": config["device"],
        "vectorize": config["vectorize"],
        "model_spec": model_spec(config, model),
        "recipe": recipe(config, model, condition),
        "data_hash": data_hash(config),
        "code_version": CODE_VERSION,
    }
    if condition in config["conditions"]:  # a config-defined set of sources: explicit seeds
        from .seeds import source_seeds

        job["sources"] = sorted(config["conditions"][condition])
        job["seeds"] = [source_seeds(dict.fromkeys(job["sources"], r), job["base_seed"]).as_dict()
                        for r in job["replicas"]]  # fmt: skip
    job["spec_hash"] = spec_hash(job)
    return job


def snapshot_job(config: dict, model: str, condition: str, chunk: int) -> dict:
    """The training job of the snapshot-ensemble run: same budget, ``snapshot_cycles`` cycles."""
    job = train_job(config, model, condition, chunk)
    del job["spec_hash"]
    job["recipe"] = {**job["recipe"], "cycles": config["mitigation"]["snapshot_cycles"]}
    job["spec_hash"] = spec_hash(job)
    return job


def twins_job(config: dict, model: str) -> dict:
    """The twin-divergence job of ``model`` (base run = replica 0 of control)."""
    job = {
        "experiment": config["experiment"],
        "model": model,
        "condition": "control",
        "base_seed": config["base_seed"],
        "device": config["device"],
        "model_spec": model_spec(config, model),
        "recipe": recipe(config, model, "control"),
        "twins": config["instability"]["twins"],
        "record_points": config["instability"]["record_points"],
        "data_hash": data_hash(config),
        "code_version": CODE_VERSION,
    }
    job["spec_hash"] = spec_hash(job)
    return job


#: The authors' TTA sets (their evaluate.py): name -> spec. Their counts of augmented views,
#: excluding the original, are 1 / 25 / 81 / 50 / 162; they average the original's logits with
#: them (``original: extra``), so 2 / 26 / 82 / 51 / 163 passes, the crop sets' centre crop
#: repeating the original.
TTA_PRESETS = {
    "flip": {"kind": "flip", "size": 4, "stride": 1, "original": "extra"},
    "crop25": {"kind": "crops", "size": 4, "stride": 2, "original": "extra"},
    "crop81": {"kind": "crops", "size": 4, "stride": 1, "original": "extra"},
    "flip-crop25": {"kind": "flip+crops", "size": 4, "stride": 2, "original": "extra"},
    "flip-crop81": {"kind": "flip+crops", "size": 4, "stride": 1, "original": "extra"},
}


def tta_specs(config: dict) -> dict[str, dict] | None:
    """The named TTA specs of mitigation.tta when it is a list (presets by name resolved), else
    None (one spec: methods tta and snapshot+tta)."""
    tta = config["mitigation"]["tta"]
    if isinstance(tta, dict):
        return None
    out = {}
    for item in tta:
        name, spec = (item, TTA_PRESETS[item]) if isinstance(item, str) else (item["name"], item)
        if name in out:
            raise ConfigError(f"config key mitigation.tta: two specs are named {name!r}")
        out[name] = {k: v for k, v in spec.items() if k != "name"}
    return out


def mitigation_methods(config: dict | None = None) -> dict[str, str]:
    """Method name -> the tag used in file paths: tta, snapshot, snapshot+tta; with a list of
    TTA specs, tta:<name> and snapshot+tta:<name> per spec."""
    specs = tta_specs(config) if config is not None else None
    if specs is None:
        return {"tta": "tta", "snapshot": "snapshot", "snapshot+tta": "snapshot_tta"}
    methods = {f"tta:{n}": f"tta_{n}" for n in specs}
    methods["snapshot"] = "snapshot"
    methods.update({f"snapshot+tta:{n}": f"snapshot_tta_{n}" for n in specs})
    return methods


def tta_spec(config: dict, method: str) -> dict | None:
    """The TTA spec a mitigation method uses (None: no TTA)."""
    base, _, name = method.partition(":")
    if base not in ("tta", "snapshot+tta"):
        return None
    return tta_specs(config)[name] if name else config["mitigation"]["tta"]


def comparison_chunks(config: dict, name: str) -> list[list[int]]:
    r, per = config["comparisons"][name]["replicas"], config["replicas_per_job"]
    return [list(range(i, min(i + per, r))) for i in range(0, r, per)]


def comparison_job(config: dict, name: str, arm: str, chunk: int) -> dict:
    """Training job of one arm of a comparison; the arms draw independent seeds."""
    from .seeds import derive_seed

    spec = config["comparisons"][name]
    model = spec["model"]
    # sources: an arbitrary set varies, with explicit seeds (no per-condition recipe overrides)
    condition = spec.get("condition") or "sources:" + "+".join(spec["sources"])
    job = {
        "experiment": config["experiment"],
        "model": model,
        "condition": condition,
        "comparison": name,
        "arm": arm,
        "replicas": comparison_chunks(config, name)[chunk],
        "base_seed": derive_seed(config["base_seed"], 1 + ["baseline", "candidate"].index(arm)),
        "device": config["device"],
        "vectorize": config["vectorize"],
        "model_spec": model_spec(config, model, spec[arm]["params"]),
        "recipe": {**recipe(config, model, condition), **spec[arm]["training"]},
        "data_hash": data_hash(config),
        "code_version": CODE_VERSION,
    }
    if "sources" in spec:
        from .seeds import source_seeds

        job["seeds"] = [source_seeds(dict.fromkeys(spec["sources"], r), job["base_seed"]).as_dict()
                        for r in job["replicas"]]  # fmt: skip
    job["spec_hash"] = spec_hash(job)
    return job


def factorial_cells(config: dict, name: str) -> list[tuple[int, ...]]:
    import itertools

    spec = config["factorial"][name]
    return list(itertools.product(*(range(n) for n in spec["levels"])))


def factorial_chunks(config: dict, name: str) -> list[list[int]]:
    r, per = len(factorial_cells(config, name)), config["replicas_per_job"]
    return [list(range(i, min(i + per, r))) for i in range(0, r, per)]


def factorial_job(config: dict, name: str, chunk: int) -> dict:
    """Training job of some cells of a factorial design; explicit seeds per replica."""
    from .seeds import factorial_seeds

    spec = config["factorial"][name]
    cells = factorial_cells(config, name)
    replicas = factorial_chunks(config, name)[chunk]
    job = {
        "experiment": config["experiment"],
        "model": spec["model"],
        "condition": "factorial",
        "factorial": name,
        "sources": spec["sources"],
        "replicas": replicas,
        "cells": [list(cells[r]) for r in replicas],
        "seeds": [
            factorial_seeds(spec["sources"], cells[r], config["base_seed"]).as_dict() for r in replicas
        ],  # fmt: skip
        "base_seed": config["base_seed"],
        "device": config["device"],
        "vectorize": config["vectorize"],
        "model_spec": model_spec(config, spec["model"]),
        # the model's recipe, without any condition's overrides
        "recipe": {**config["training"], **config["models"][spec["model"]]["training"]},
        "data_hash": data_hash(config),
        "code_version": CODE_VERSION,
    }
    job["spec_hash"] = spec_hash(job)
    return job


# --- bring your own runs (rules/runs.smk) -----------------------------------------------------


def _check_runs(config: dict) -> None:
    """Defaults of runs.groups / runs.comparisons and their cross-references."""
    from .runs import GROUP_DEFAULTS

    runs = config["runs"]
    if not config["models"] and not runs["groups"]:
        raise ConfigError("config key models: no models to train and no runs.groups to analyse")
    for name, spec in runs["groups"].items():
        for key, value in GROUP_DEFAULTS.items():
            spec.setdefault(key, value)
        if spec["model"] in config["models"]:
            raise ConfigError(
                f"config key runs.groups.{name}.model: {spec['model']!r} is a model the pipeline "
                "trains; give imported runs another model label"
            )
    for name, spec in runs["comparisons"].items():
        for arm in ("baseline", "candidate"):
            if spec[arm] not in runs["groups"]:
                raise ConfigError(
                    f"config key runs.comparisons.{name}.{arm}: unknown group {spec[arm]!r} "
                    f"(groups: {', '.join(runs['groups']) or 'none'})"
                )
        if spec["baseline"] == spec["candidate"]:
            raise ConfigError(f"config key runs.comparisons.{name}: baseline and candidate are the same group")
        for arm in ("baseline", "candidate"):
            if spec.get("paired_by") and not runs["groups"][spec[arm]]["metadata"]:
                raise ConfigError(
                    f"config key runs.comparisons.{name}.paired_by: group {spec[arm]!r} has no "
                    "metadata CSV to pair its runs by"
                )
        for key, value in {"paired_by": None, "alpha": 0.05, "power": 0.8, "effect": None}.items():
            spec.setdefault(key, value)
    if runs["all_pairs"] and len(runs["groups"]) < 2:
        raise ConfigError("config key runs.all_pairs: needs at least 2 groups")


def run_groups(config: dict) -> list[tuple[str, str]]:
    """(model label, group name) of every imported group of runs."""
    return [(spec["model"], name) for name, spec in config["runs"]["groups"].items()]


# --- what each stage expects of its inputs ----------------------------------------------------
# Every output carries spec_hash, data_hash and code_version (nondet.h5io.atomic_h5); the rules
# pass the values each input must carry, and nondet.h5io.open_input refuses any other file.


def job_expect(job: dict, **extra) -> dict:
    """What an output made from ``job`` carries."""
    return {"spec_hash": job["spec_hash"], "data_hash": job["data_hash"],
            "code_version": job["code_version"], **extra}  # fmt: skip


def predict_expect(config: dict, model: str, condition: str, chunk: int, method="plain") -> dict:
    """What results/{,mitigation/}predict/... chunk ``chunk`` of ``method`` carries."""
    if method == "plain" or method.startswith("tta"):  # tta or tta:<name> (a list of specs)
        job = train_job(config, model, condition, chunk)
    else:
        job = snapshot_job(config, model, condition, chunk)
    return job_expect(job, method=method, tta=tta_spec(config, method))


def metrics_params(config: dict, model: str, condition: str, method="plain") -> dict:
    """Params of a metrics job, including what each of its prediction files must carry."""
    params = {
        "model": model,
        "condition": condition,
        **config["metrics"],
        "code_version": CODE_VERSION,
    }
    if method != "plain":
        params["method"] = method
    params["inputs"] = [predict_expect(config, model, condition, k, method) for k in range(n_chunks(config))]
    return params


def metrics_expect(config: dict, model: str, condition: str, method="plain") -> dict:
    """What the metrics file of (model, condition, method) carries: the hash of its params."""
    return {
        "spec_hash": spec_hash(metrics_params(config, model, condition, method)),
        "data_hash": data_hash(config),
        "code_version": CODE_VERSION,
    }


def runs_metrics_params(config: dict, run_model: str, group: str) -> dict:
    """Params of the metrics job of an imported group (rules/runs.smk): as metrics_params, same
    bootstrap seeds; its input's hashes come from the imported files, so none are listed."""
    return {"model": run_model, "condition": group, **config["metrics"], "code_version": CODE_VERSION}


def runs_metrics_expect(config: dict, run_model: str, group: str) -> dict:
    """What the metrics file of an imported group carries (its data_hash comes from the labels
    of the imported files, so it is not known from the config)."""
    return {"spec_hash": spec_hash(runs_metrics_params(config, run_model, group)),
            "code_version": CODE_VERSION}  # fmt: skip


def comparison_expect(config: dict, name: str) -> dict:
    """Per arm, what each prediction file of a comparison carries."""
    n = len(comparison_chunks(config, name))
    return {arm: [job_expect(comparison_job(config, name, arm, k), method="plain", tta=None)
                  for k in range(n)] for arm in ("baseline", "candidate")}  # fmt: skip


def factorial_expect(config: dict, name: str) -> list[dict]:
    n = len(factorial_chunks(config, name))
    return [job_expect(factorial_job(config, name, k), method="plain", tta=None) for k in range(n)]


# --- YAML files: duplicate keys and syntax errors, named --------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _no_duplicates(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(
                f"{key_node.start_mark.name}, line {key_node.start_mark.line + 1}: duplicate key "
                f"{key!r} (first on line {seen[key] + 1}); YAML would silently keep the last value"
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load_yaml(path) -> dict:
    """A YAML config file, refusing duplicate keys; syntax errors name the file and line."""
    try:
        with open(path) as f:
            return yaml.load(f, Loader=_StrictLoader) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: YAML syntax error: {getattr(e, 'problem', None) or e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None


def check_config_files(paths) -> None:
    """Re-read the config files Snakemake has merged, to catch what its loader lets through."""
    for path in paths:
        load_yaml(path)


def _merge(base: dict, new: dict) -> dict:
    """Snakemake's way of merging config files: nested mappings key by key."""
    out = dict(base)
    for k, v in new.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def main(argv=None) -> int:
    """``python -m nondet.config FILE...``: check config files, merged in order as Snakemake does
    (list config.yaml first when your run merges over it), before any workflow starts. Snakemake
    itself reports a YAML syntax error of a --configfile without file or line."""
    import sys

    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print(main.__doc__)
        return 2
    try:
        merged = {}
        for path in paths:
            merged = _merge(merged, load_yaml(path))
        config = validate(merged)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"valid: {len(groups(config))} (model, condition) groups, about {plan_size(config)} jobs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
