"""The config schema, ``nondet/config.schema.yaml``: every key of an experiment, its type, its
default and what it means. A shared leaf (no nondet imports, no torch): the workflow validates
the config against it (nondet.workflow.config), and the I/O layer takes its defaults from it
(nondet.io.runs, for groups of imported runs)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import yaml

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


#: libyaml's safe loader where PyYAML was built with it: the same document in 11 ms instead of the
#: pure-Python parser's 82 ms (every Snakemake invocation and config check parses the schema)
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def cached_schema() -> dict:
    """The parsed schema, shared: do not modify (see load_schema)."""
    with open(SCHEMA_PATH) as f:
        return yaml.load(f, Loader=SAFE_LOADER)


def load_schema() -> dict:
    """The config schema (a fresh copy): every key, its type, its default and what it means."""
    return copy.deepcopy(cached_schema())


def resolve(node: dict, schema: dict) -> dict:
    """``node`` itself, or the ``$defs`` entry its ``$ref`` names."""
    return schema["$defs"][node["$ref"].rsplit("/", 1)[-1]] if "$ref" in node else node


def defaults(node: dict) -> dict:
    """The defaults of an object node's properties (copies)."""
    return {k: copy.deepcopy(v["default"]) for k, v in node["properties"].items() if "default" in v}


def schema_defaults(*path: str) -> dict:
    """The defaults of the object at ``path`` in the config schema, e.g. ``("runs", "groups",
    "*")`` for every entry of runs.groups (``*``: an entry of a named mapping)."""
    schema = cached_schema()
    node = schema
    for key in path:
        node = resolve(node, schema)
        node = node["additionalProperties"] if key == "*" else node["properties"][key]
    return defaults(resolve(node, schema))
