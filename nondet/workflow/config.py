"""The experiment configuration's entry: YAML loading (duplicate keys and syntax errors named),
validation (the schema, then its defaults filled in, then the defaults a schema cannot state,
then the checks of nondet.workflow.config_checks), and checking config files before a run
(``python -m nondet check-config``). Every failure is a ConfigError naming the key or file;
callers catch it here, as ``nondet.workflow.config.ConfigError`` (it is defined in
nondet.workflow.config_errors, so that the checks can raise it without importing this module).

Imported by the Snakefile, so it must stay light (no torch).
"""

from __future__ import annotations

import copy
import math
import re

import yaml

from nondet.methods import REGISTRY, MethodError, load_plugins
from nondet.schema import load_schema, resolve
from nondet.workflow.config_checks import ARCH_PARAMS, check
from nondet.workflow.config_errors import STRICT, ConfigError, hint, key_path, unknown_keys
from nondet.workflow.plan import groups, is_user_arch, plan_size

#: Partial recipes: their keys are changes, so the recipe's defaults must not be filled in.
_NO_FILL = "#/$defs/recipe_override"


def _fill_defaults(node: dict, instance: dict, schema: dict) -> None:
    """Fill the schema's ``default`` values of declared properties, recursively, also in every
    entry of a named mapping (models.<name>, comparisons.<name>, runs.groups.<name>, ...)."""
    node = resolve(node, schema)
    for name, sub in node.get("properties", {}).items():
        if name not in instance and "default" in sub:
            instance[name] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(name), dict) and sub.get("$ref") != _NO_FILL:
            _fill_defaults(sub, instance[name], schema)
    entry = node.get("additionalProperties")
    if isinstance(entry, dict) and entry.get("$ref") != _NO_FILL and "properties" in resolve(entry, schema):
        for value in instance.values():
            if isinstance(value, dict):
                _fill_defaults(entry, value, schema)


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


#: Top-level keys that were renamed: old -> new (a config with the old name fails, naming the new).
RENAMED = {"instability": "divergence"}


def validate(config: dict) -> dict:
    """Validated copy of ``config`` with defaults filled in; raises ConfigError naming the key."""
    schema = load_schema()
    config = copy.deepcopy(dict(config))
    if isinstance(config.get("models"), dict):  # `name: null` in a later --configfile removes it
        config["models"] = {k: v for k, v in config["models"].items() if v is not None}
    bad = [f"config key {old}: renamed to {new} (same keys)" for old, new in RENAMED.items() if old in config]
    bad += [f"config key {key_path(p)}: {v} is not a finite number" for p, v in _non_finite(config)]
    if bad:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(bad))
    _method_plugins(config, schema)
    validator = STRICT(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors[:10]:
            if e.validator == "additionalProperties":
                lines += unknown_keys(e)
            else:
                lines.append(f"config key {key_path(e.absolute_path)}: {e.message}{hint(e)}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    _fill_defaults(schema, config, schema)
    _fill_derived(config)
    check(config)
    return config


def _fill_derived(config: dict) -> None:
    """The defaults a schema cannot state, filled before the checks: a built-in model's params
    (its ``$defs.params_<arch>``, ARCH_PARAMS; the schema has typed them), a comparison's
    condition (``all``, unless it gives sources: not a schema default, since sources exclude it),
    a factorial design's levels given as one number (that number for each of its sources)."""
    for model in config["models"].values():
        arch = model.get("arch")
        if isinstance(arch, str) and arch in ARCH_PARAMS and not is_user_arch(arch):
            model["params"] = {**ARCH_PARAMS[arch], **model["params"]}
    for spec in config["comparisons"].values():
        if "sources" not in spec:
            spec.setdefault("condition", "all")
    for spec in config["factorial"].values():
        if isinstance(spec["levels"], int):
            spec["levels"] = [spec["levels"]] * len(spec["sources"])


def _method_plugins(config: dict, schema: dict) -> None:
    """Import the modules of mitigation.plugins (they register methods, nondet.methods) and add
    each registered plug-in's config keys (its ``schema``) under mitigation.<name>."""
    mit = config.get("mitigation")
    plugins = mit.get("plugins", []) if isinstance(mit, dict) else []
    if isinstance(plugins, list) and all(isinstance(p, str) for p in plugins):
        try:
            load_plugins(plugins)
        except MethodError as e:
            raise ConfigError(f"invalid configuration:\n  config key {e}") from None
    props = schema["properties"]["mitigation"]["properties"]
    for name, plugin in REGISTRY.items():
        if plugin.schema is not None and name not in props:
            props[name] = plugin.schema


# --- YAML files: duplicate keys and syntax errors, named --------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _no_duplicates(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`, merged by construct_mapping
            continue
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


def check_files(paths) -> int:
    """Check config files, merged in order as Snakemake does (list config.yaml first when your run
    merges over it), before any workflow starts, naming file and line of a YAML error (Snakemake
    itself reports a YAML syntax error of a --configfile without file or line). Prints the
    verdict; returns the exit status."""
    import sys

    try:
        merged = {}
        for path in paths:
            merged = _merge(merged, load_yaml(path))
        config = validate(merged)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    exact = planned_jobs(paths)
    size = f"{exact} jobs (snakemake -n -F)" if exact is not None else f"about {plan_size(config)} jobs"
    print(f"valid: {len(groups(config))} (model, condition) groups, {size}")
    return 0


def planned_jobs(paths, snakefile=None, timeout: float = 300) -> int | None:
    """The exact number of jobs Snakemake plans for the config files ``paths`` (merged over the
    Snakefile's config.yaml of the current folder, as a run from here would): ``snakemake -n -F``
    (every job, whether or not its output exists), read from its job statistics. None when it
    cannot tell (no Snakefile beside the package, Snakemake failing): the caller falls back to
    ``plan_size``'s arithmetic."""
    import subprocess
    import sys
    from pathlib import Path

    snakefile = Path(snakefile or Path(__file__).resolve().parents[2] / "Snakefile")
    if not snakefile.is_file():
        return None
    cmd = [sys.executable, "-m", "snakemake", "-n", "-F", "--nolock", "--quiet", "rules", "--snakefile"]
    cmd += [str(snakefile), "--configfile", *[str(Path(p).resolve()) for p in paths]]
    try:  # Snakemake puts the Snakefile's folder (and so nondet) on sys.path itself
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    totals = re.findall(r"^total\s+(\d+)\s*$", out.stdout + out.stderr, re.M)
    return int(totals[-1]) if out.returncode == 0 and totals else None
