"""Mitigation methods as plug-ins, parsed once: the registry of what each method is (how it
trains, which weights predict, its config keys, its label), the names in configs and tables
(plain, tta, snapshot, snapshot+tta, ema, ema+tta, swa, swa+tta; with a list of named TTA specs
<method>+tta:<name>), their tags in file paths (+ and : become _) and where their predictions
lie. Standard library only: the Snakefile imports it.

A method is one :class:`Plugin`: ``run`` names the training run it predicts with (``plain``:
the protocol's own replicas, trained anyway; any other name: a run of its own, with the
protocol's recipe plus ``recipe(mitigation config)``), ``weights`` picks the weight sets of a
trained replica whose logits are averaged. Every method also combines with test-time
augmentation (``<name>+tta``). Adding one takes one file calling :func:`register` (listed in
``mitigation.plugins`` of the config, or imported here for a built-in one) and one schema entry
(its keys under ``mitigation.<name>``: the plug-in's ``schema``, or config.schema.yaml).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass


def _nothing(mitigation: dict) -> dict:
    return {}


def _final(replica: dict) -> list:
    return [replica["weights"]]


def _one(row: dict) -> int:
    return 1


@dataclass(frozen=True)
class Plugin:
    """One mitigation method: how it trains and how it predicts.

    ``name``: in configs, tables and file tags (lower case, no ``+``, ``:`` or ``_``); ``label``:
    its words in tables and figures; ``run``: the training run it predicts with (``plain``: the
    protocol's replicas; another name: its own run, the protocol's recipe updated with
    ``recipe(config["mitigation"])``; methods naming one run share it, their recipes merged);
    ``weights(replica)``: the weight sets (state dicts, as nondet.io.files.load_replicas reads
    them) whose logits are averaged, the last one also giving the features; ``members(row)``:
    models averaged, from a metrics row (ensembles table); ``keys``: its config keys under
    ``mitigation.<name>`` (documentation; ``schema``: their JSON schema, for a plug-in outside
    config.schema.yaml); ``paper``: whether Summers & Dinneen (2021) measured it; ``cost``: its
    extra cost in words."""

    name: str
    label: str
    run: str = "plain"
    recipe: Callable[[dict], dict] = _nothing
    weights: Callable[[dict], list] = _final
    members: Callable[[dict], int] = _one
    keys: tuple[str, ...] = ()
    schema: dict | None = None
    paper: bool = False
    cost: str = "none"

    def __post_init__(self):
        if not re.fullmatch(r"[a-z][a-z0-9\-]*", self.name) or self.name in ("tta",):
            raise MethodError(f"bad mitigation method name {self.name!r}: lower-case letters, digits and '-'")


def _averaged(kind: str) -> Callable[[dict], list]:
    def weights(replica: dict) -> list:
        averaged = replica.get("averaged") or {}
        if kind not in averaged:
            raise MethodError(
                f"this training file holds no {kind} weights (trained without recipe.averages.{kind}); "
                "rerun its training job"
            )
        return [averaged[kind]]

    return weights


def _snapshots(replica: dict) -> list:
    if not replica["snapshots"]:
        raise MethodError("this training file has no snapshots (trained with cycles=1)")
    return replica["snapshots"]


#: The registry: method name -> plug-in, in table order (each followed by itself with TTA).
REGISTRY: dict[str, Plugin] = {}


def register(plugin: Plugin) -> Plugin:
    """Add ``plugin`` to the registry (again with the same name: replaced); returns it."""
    REGISTRY[plugin.name] = plugin
    return plugin


register(Plugin("plain", "plain training (final weights)", paper=True))
register(
    Plugin(
        "snapshot",
        "snapshot ensemble (logits of each cosine cycle's final weights)",
        run="snapshot",
        recipe=lambda mit: {"cycles": mit["snapshot_cycles"]},
        weights=_snapshots,
        members=lambda row: int(row["cycles"]),
        keys=("snapshot_cycles",),
        paper=True,
        cost="a training run of its own (same epochs, cyclic learning rate); one test pass per cycle",
    )
)
register(
    Plugin(
        "ema",
        "exponential moving average of the weights",
        recipe=lambda mit: {"averages": {"ema": dict(mit["ema"])}},
        weights=_averaged("ema"),
        keys=("ema",),
        cost="none: kept while the protocol's run trains (one averaged copy of the weights)",
    )
)
register(
    Plugin(
        "swa",
        "stochastic weight averaging of the last epochs' weights (BatchNorm statistics recomputed)",
        recipe=lambda mit: {"averages": {"swa": dict(mit["swa"])}},
        weights=_averaged("swa"),
        keys=("swa",),
        cost="none: kept while the protocol's run trains, plus one BatchNorm pass over the training set",
    )
)

#: The built-in methods without a TTA spec name, in table order.
BASES = ("plain", "tta", "snapshot", "snapshot+tta", "ema", "ema+tta", "swa", "swa+tta")

#: A TTA spec name (config.schema.yaml, $defs/tta_spec/name).
_SPEC = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")


def _forms() -> str:
    others = [n for n in REGISTRY if n != "plain"]
    forms = ["plain", "tta", *(f for n in others for f in (n, f"{n}+tta"))]
    return ", ".join(forms) + ", tta:<name>, <method>+tta:<name> (<name>: a spec of mitigation.tta)"


class MethodError(ValueError):
    """An unknown or malformed mitigation method name."""


def load_plugins(modules: Iterable[str]) -> None:
    """Import each module of ``modules`` (mitigation.plugins: import paths), which registers its
    methods; fails naming the config key and the module."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise MethodError(
                f"mitigation.plugins: cannot import {module!r} ({e}); put its folder on PYTHONPATH "
                "or install its package"
            ) from e


@dataclass(frozen=True)
class Method:
    """A mitigation method: the plug-in ``weights`` (plain, snapshot, ema, swa, or one
    registered) predicting alone or averaged over TTA views (``tta``), those of the spec named
    ``spec`` in a list of specs (None: the one spec of mitigation.tta)."""

    weights: str = "plain"
    tta: bool = False
    spec: str | None = None

    def __post_init__(self):
        if self.weights not in REGISTRY:
            raise MethodError(f"unknown mitigation method {self.weights!r}; valid: {_forms()}")
        if self.spec is not None and not (self.tta and _SPEC.fullmatch(self.spec)):
            raise MethodError(f"bad TTA spec name {self.spec!r} for a method (tta={self.tta}); valid: {_forms()}")

    @classmethod
    def parse(cls, name: str | Method, valid: Iterable[str | Method] | None = None) -> Method:
        """The method named ``name``; ``valid``: the methods allowed here (e.g. a config's)."""
        if isinstance(name, Method):
            method = name
        else:
            base, colon, spec = str(name).partition(":")
            weights, plus, tail = base.partition("+")
            if base == "tta":
                weights, plus, tail = "plain", "+", "tta"
            elif weights == "plain" and plus:
                weights = ""  # plain+tta is called tta
            ok = weights in REGISTRY and (not plus or tail == "tta")
            if not ok or (colon and not (plus and _SPEC.fullmatch(spec))):
                raise MethodError(f"unknown mitigation method {name!r}; valid: {_valid_text(valid)}")
            method = cls(weights, bool(plus), spec or None)
        if valid is not None and method.name not in {cls.parse(v).name for v in valid}:
            raise MethodError(f"unknown mitigation method {method.name!r}; valid: {_valid_text(valid)}")
        return method

    @classmethod
    def from_tag(cls, tag: str, valid: Iterable[str | Method] | None = None) -> Method:
        """The method whose file path tag is ``tag`` (:attr:`tag`)."""
        # the longest plug-in name first: a plug-in's name may start with another's
        for weights in sorted(REGISTRY, key=len, reverse=True):
            prefix = "tta" if weights == "plain" else weights
            rest = tag[len(prefix) :] if tag.startswith(prefix) else None
            if weights == "plain" and tag == "plain":
                return cls.parse("plain", valid)
            if rest is None or (rest and not rest.startswith("_")):
                continue
            if weights == "plain":  # tta or tta_<spec>
                return cls.parse("tta" + (":" + rest[1:] if rest else ""), valid)
            if not rest:
                return cls.parse(weights, valid)
            if rest == "_tta" or rest.startswith("_tta_"):
                return cls.parse(f"{weights}+tta" + (":" + rest[5:] if rest != "_tta" else ""), valid)
        tags = ", ".join(cls.parse(v).tag for v in valid) if valid is not None else f"tags of {_forms()}"
        raise MethodError(f"unknown mitigation method tag {tag!r}; valid: {tags}")

    @property
    def plugin(self) -> Plugin:
        """How this method trains and predicts (the registry's entry of :attr:`weights`)."""
        return REGISTRY[self.weights]

    @property
    def snapshot(self) -> bool:
        """Whether it predicts with a snapshot ensemble."""
        return self.weights == "snapshot"

    @property
    def base(self) -> str:
        """The name without its spec: plain, tta, snapshot, snapshot+tta, ema, ema+tta, ..."""
        if self.weights == "plain":
            return "tta" if self.tta else "plain"
        return self.weights + ("+tta" if self.tta else "")

    @property
    def name(self) -> str:
        """The canonical name, as in configs, tables and prediction files."""
        return self.base + (f":{self.spec}" if self.spec else "")

    @property
    def tag(self) -> str:
        """The name in file paths: tta_<name>, snapshot_tta_<name>, ..."""
        return self.name.replace("+", "_").replace(":", "_")

    @property
    def rank(self) -> int:
        """Table order: the registry's order, each method before itself with TTA (specs of one
        base: as given)."""
        return 2 * list(REGISTRY).index(self.weights) + self.tta

    @property
    def label(self) -> str:
        """Its words in tables and figures."""
        return self.plugin.label + (" + TTA" if self.tta else "")

    @property
    def trained_run(self) -> str:
        """The training run it predicts with: plain (the protocol's) or the plug-in's own run."""
        return self.plugin.run

    def __str__(self) -> str:
        return self.name


def _valid_text(valid) -> str:
    return _forms() if valid is None else ", ".join(Method.parse(v).name for v in valid)


def predictions_path(
    method: str | Method = "plain", model="{model}", condition="{condition}", chunk="{chunk}", epochs=None
) -> str:
    """Where the predictions of ``method`` lie: results/predict/ (plain), results/mitigation/
    predict/ (the others), or results/budget/ (``epochs``: the budget study, plain included).
    Arguments left at their defaults, and the method ``{method}``, stay Snakemake wildcards."""
    tag = method if method == "{method}" else Method.parse(method).tag
    if epochs is not None:
        return f"results/budget/{model}/{condition}/e{epochs}/predict/{tag}/chunk{chunk}.h5"
    if tag == "plain":
        return f"results/predict/{model}/{condition}/chunk{chunk}.h5"
    return f"results/mitigation/predict/{model}/{condition}/{tag}/chunk{chunk}.h5"


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
