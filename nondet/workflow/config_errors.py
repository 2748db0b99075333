"""ConfigError, and the schema validator with its errors as messages that name the key and,
where a YAML trap is the cause, the fix. Used by the validation entry (nondet.workflow.config)
and by the checks a schema cannot express (nondet.workflow.config_checks). No torch.
"""

from __future__ import annotations

import math
import re

import jsonschema


class ConfigError(ValueError):
    """The configuration is invalid; the message names the offending key."""


def key_path(path) -> str:
    """A config key's path as the messages write it: ``models.cnn.params``."""
    return ".".join(str(p) for p in path) or "<top level>"


# JSON Schema counts 4.0 as an integer; we do not (``replicas: 4.0`` crashed inside jobs).
STRICT = jsonschema.validators.extend(
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


def hint(e) -> str:
    """Extra words for a schema error whose cause is a YAML trap."""
    if e.validator == "pattern" and str(e.validator_value).startswith("^[A-Za-z0-9_]"):
        return " (names may hold letters, digits, _ and - only: they become folder names of the outputs)"
    if e.validator != "type":
        return ""
    x = e.instance
    if isinstance(x, bool) and "string" in str(e.validator_value):
        word = "on" if x else "off"
        return f' (YAML 1.1 reads unquoted on/off/yes/no/true/false as booleans: quote the value, e.g. "{word}")'
    if isinstance(x, float) and x.is_integer() and "integer" in str(e.validator_value):
        return f" (a whole number is meant: write {int(x)}, without the decimal point)"
    if isinstance(x, str) and "integer" in str(e.validator_value) and re.fullmatch(r"\s*[-+]?\d+\s*", x):
        return (
            f" (a whole number that arrived as the string {x!r}: write {int(x)} in a --configfile; "
            "values nested inside --config arrive as strings)"
        )
    if isinstance(x, str):
        try:
            number = float(x)
        except ValueError:
            return ""
        if "integer" in str(e.validator_value) and math.isfinite(number) and number.is_integer():
            return (
                f" (a whole number that arrived as the string {x!r}, as YAML 1.1 reads 1e7: "
                f"write {int(number)}, without exponent or decimal point)"
            )
        return (
            f" (a number in quotes, or one YAML reads as a string: write {_yaml_float(x)}; "
            "values given with --config arrive as strings, so put numbers in a --configfile)"
        )
    return ""


def unknown_keys(e) -> list[str]:
    """One line per key the schema does not declare, naming it and the allowed keys."""
    known = sorted(e.schema.get("properties", {}))
    allowed = f" (allowed keys: {', '.join(known)})" if known else " (no keys allowed)"
    extra = [k for k in e.instance if k not in known] if isinstance(e.instance, dict) else []
    if not extra:
        return [f"config key {key_path(e.absolute_path)}: {e.message}{allowed}"]
    return [f"config key {key_path([*e.absolute_path, k])}: unknown key{allowed}" for k in extra]
