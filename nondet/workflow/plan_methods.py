"""The mitigation methods a config names: TTA specs, method names and their path tags and labels,
the training run each method predicts with, and the TTA spec each uses.

Pure functions of a validated config and the method registry (nondet.methods); the job builders
(nondet.workflow.plan) and what each stage expects (nondet.workflow.expect) use them. Nothing here
imports torch (the Snakefile imports it).
"""

from __future__ import annotations

from nondet.methods import REGISTRY, TTA_PRESETS, Method

# --- mitigation: TTA specs and method names ----------------------------------------------------


def tta_specs(config: dict) -> dict[str, dict] | None:
    """The named TTA specs of mitigation.tta when it is a list (presets by name resolved), else
    None (one spec: methods tta and snapshot+tta). Names are unique (nondet.workflow.config_checks checks)."""
    tta = config["mitigation"]["tta"]
    if isinstance(tta, dict):
        return None
    out = {}
    for item in tta:
        name, spec = (item, TTA_PRESETS[item]) if isinstance(item, str) else (item["name"], item)
        out.setdefault(name, {k: v for k, v in spec.items() if k != "name"})
    return out


def configured_weights(config: dict) -> list[str]:
    """The methods of mitigation.methods (plug-in names) in registry order, plain first."""
    chosen = set(config["mitigation"]["methods"]) if config is not None else set(REGISTRY)
    return [w for w in REGISTRY if w == "plain" or w in chosen]


def training_runs(config: dict) -> list[str]:
    """The training runs of the configured methods, plain (the protocol's) first."""
    return list(dict.fromkeys(REGISTRY[w].run for w in configured_weights(config)))


def mitigation_methods(config: dict | None = None) -> dict[str, str]:
    """Method name -> the tag used in file paths: tta, then each method of mitigation.methods
    (snapshot, ema, swa, registered plug-ins) alone and with TTA; with a list of TTA specs,
    tta:<name> and <method>+tta:<name> per spec."""
    specs = tta_specs(config) if config is not None else None
    names = [None] if specs is None else list(specs)
    methods = []
    for w in configured_weights(config) if config is not None else list(REGISTRY):
        if w != "plain":
            methods.append(Method(w))
        methods += [Method(w, tta=True, spec=n) for n in names]
    return {m.name: m.tag for m in methods}


def budget_methods(config: dict) -> dict[str, str]:
    """Method name -> path tag of the budget study: plain, then the mitigation methods."""
    return {"plain": "plain", **mitigation_methods(config)}


def method_labels(config: dict) -> dict[str, str]:
    """Method name -> its words in tables and figures (the plug-ins' labels)."""
    return {name: Method.parse(name).label for name in budget_methods(config)}


def trained_run(method: str) -> str:
    """The training run a method predicts with: plain (the protocol's replicas: plain, tta, ema,
    swa, each with TTA) or the plug-in's own run (snapshot, snapshot+tta)."""
    return Method.parse(method).trained_run


def tta_spec(config: dict, method: str) -> dict | None:
    """The TTA spec a mitigation method uses (None: no TTA)."""
    m = Method.parse(method)
    if not m.tta:
        return None
    Method.parse(m, budget_methods(config))  # one of this config's specs
    return tta_specs(config)[m.spec] if m.spec else config["mitigation"]["tta"]
