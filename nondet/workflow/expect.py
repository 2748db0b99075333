"""What each stage expects of its inputs: the params of the metrics, comparison, factorial and
ensembles jobs, and the spec_hash, data_hash and code_version each input file must carry.

Each output carries the ``spec_hash`` of the job dict that made it (nondet.workflow.plan); the
rules pass the dicts built here, and the stage that reads a file checks its hashes against them.
Pure functions of a validated config; nothing here imports torch (the Snakefile imports it).
"""

from __future__ import annotations

from nondet.io.files import job_expect
from nondet.io.h5io import CODE_VERSION, spec_hash
from nondet.seeds import CONDITIONS, SOURCES
from nondet.workflow.plan import (
    budget_job,
    comparison_chunks,
    comparison_job,
    data_hash,
    factorial_cells,
    factorial_chunks,
    factorial_job,
    mitigation_job,
    n_chunks,
)
from nondet.workflow.plan_methods import trained_run, tta_spec

# --- what each stage expects of its inputs ----------------------------------------------------
# Every output carries spec_hash, data_hash and code_version (nondet.io.h5io.atomic_h5); the rules
# pass the values each input must carry, and nondet.io.h5io.open_input refuses any other file.


def predict_expect(config: dict, model: str, condition: str, chunk: int, method="plain", epochs=None) -> dict:
    """What results/{,mitigation/}predict/... chunk ``chunk`` of ``method`` carries; ``epochs``:
    that of the budget study at this many epochs (results/budget/...)."""
    if epochs is not None:
        job = budget_job(config, model, condition, epochs, chunk, trained_run(method))
    else:
        job = mitigation_job(config, model, condition, chunk, method)
    return job_expect(job, method=method, tta=tta_spec(config, method))


def metrics_params(config: dict, model: str, condition: str, method="plain", epochs=None) -> dict:
    """Params of a metrics job, including what each of its prediction files must carry
    (``epochs``: a metrics job of the budget study)."""
    params = {
        "model": model,
        "condition": condition,
        **config["metrics"],
        "code_version": CODE_VERSION,
    }
    if method != "plain":
        params["method"] = method
    params["inputs"] = [predict_expect(config, model, condition, k, method, epochs) for k in range(n_chunks(config))]
    return params


def metrics_expect(config: dict, model: str, condition: str, method="plain", epochs=None) -> dict:
    """What the metrics file of (model, condition, method) carries: the hash of its params."""
    return {
        "spec_hash": spec_hash(metrics_params(config, model, condition, method, epochs)),
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
    return {"spec_hash": spec_hash(runs_metrics_params(config, run_model, group)), "code_version": CODE_VERSION}


def comparison_expect(config: dict, name: str) -> dict:
    """Per arm, what each prediction file of a comparison carries."""
    n = len(comparison_chunks(config, name))
    return {
        arm: [job_expect(comparison_job(config, name, arm, k), method="plain", tta=None) for k in range(n)]
        for arm in ("baseline", "candidate")
    }


def factorial_expect(config: dict, name: str) -> list[dict]:
    n = len(factorial_chunks(config, name))
    return [job_expect(factorial_job(config, name, k), method="plain", tta=None) for k in range(n)]


def per_metric(value) -> dict:
    """A config's effect or margin: a number is accuracy points; a mapping gives one per metric."""
    if value is None:
        return {}
    return dict(value) if isinstance(value, dict) else {"accuracy": float(value)}


def held_fixed_note(varying, sources) -> str:
    """What the verdict says of the sources held fixed within the arms (Bouthillier et al. 2021)."""
    fixed = [s for s in sources if s not in set(varying)]
    if not fixed:
        return "every source of randomness varies between runs: the intervals are those of independent runs"
    note = (
        f"only {', '.join(varying)} varies between runs; held fixed: {', '.join(fixed)}. The intervals are "
        "conditional on the fixed values and narrower than those of fully independent runs"
    )
    if list(varying) == ["init"]:
        note += " (Bouthillier et al. 2021: varying only the initialisation is worth about 2 independent runs)"
    return note


def compare_params(config: dict, name: str) -> dict:
    """Params of a comparison's summary job (rules/compare.smk): the verdict engine's."""
    spec = config["comparisons"][name]
    varying = spec["sources"] if "sources" in spec else CONDITIONS[spec["condition"]]
    every = [s for s in SOURCES if s in CONDITIONS["all"]]
    return {
        "name": name,
        "baseline": "baseline",
        "candidate": "candidate",
        "alpha": spec["alpha"],
        "power": spec["power"],
        "effect": per_metric(spec["effect"]),
        "gamma": spec["gamma"],
        "margin": per_metric(spec["margin"]),
        "margin_kind": spec["margin_kind"],
        "on_diverged": config["metrics"]["on_diverged"],
        "held_fixed": held_fixed_note([s for s in every if s in varying], every)
        if spec.get("condition") != "bitflip"
        else "only one weight's one-ulp nudge varies between runs (condition bitflip)",
        "code_version": CODE_VERSION,
        "inputs": comparison_expect(config, name),
    }


def factorial_params(config: dict, name: str) -> dict:
    """Params of a factorial design's variance-components job (rules/compare.smk)."""
    spec = config["factorial"][name]
    return {
        "name": name,
        "sources": spec["sources"],
        "levels": spec["levels"],
        "cells": [list(c) for c in factorial_cells(config, name)],
        "bootstrap_resamples": spec["bootstrap_resamples"],
        "seed": config["metrics"]["seed"],
        "on_diverged": config["metrics"]["on_diverged"],
        "code_version": CODE_VERSION,
        "inputs": factorial_expect(config, name),
    }


# --- k-model ensembles of a condition's replicas (rules/ensembles.smk) --------------------------


def ensembles_params(config: dict, model: str, condition: str) -> dict:
    """Params of the ensembles job of (model, condition): what its prediction files carry."""
    params = metrics_params(config, model, condition)
    return {k: params[k] for k in ("model", "condition", "on_diverged", "code_version", "inputs")}


def ensembles_expect(config: dict, model: str, condition: str) -> dict:
    return {
        "spec_hash": spec_hash(ensembles_params(config, model, condition)),
        "data_hash": data_hash(config),
        "code_version": CODE_VERSION,
    }
