"""The job plan: every job's parameters, as pure functions of a validated config.

The Snakefile's rules pass these dicts as ``params`` (so changing one reruns exactly the jobs it
describes), and each output carries the ``spec_hash`` of the dict that made it: the stage that
reads it checks that hash against what the plan says it must be (nondet.workflow.expect). The
mitigation methods' names and TTA specs are in nondet.workflow.plan_methods.

Every training job is one base job (:func:`base_job`: the model, its recipe, the seeds' base, the
device, the data and code versions) plus what its kind adds: replica indices for a protocol
condition, a cycle count for a snapshot run, a number of epochs for the budget study (on either),
twins for the divergence study, an arm for a comparison, cells for a factorial design. Every
job's seeds are chosen here, one ReplicaSeeds dict per replica or run (``seeds``, or ``runs`` of
the divergence twins and the script audit): the stages never derive a seed.
Validation (nondet.workflow.config) comes first; nothing here checks the config, and nothing here imports
torch (the Snakefile imports it).
"""

from __future__ import annotations

import itertools
import math

from nondet.analysis.divergence import twin_runs
from nondet.io.checksums import file_sha256
from nondet.io.h5io import CODE_VERSION, spec_hash
from nondet.methods import REGISTRY
from nondet.seeds import CONDITIONS, SOURCES, derive_seed, factorial_seeds, replica_seeds, source_seeds
from nondet.workflow.plan_methods import (
    budget_methods,
    configured_weights,
    mitigation_methods,
    trained_run,
    training_runs,
)

# --- what the config names --------------------------------------------------------------------


def is_user_arch(arch: str) -> bool:
    """A researcher's own model: ``"pkg.module:callable"`` (nondet.training.usermodel)."""
    return ":" in str(arch)


def user_models(config: dict) -> list[str]:
    """Models whose arch is a user's callable (each gets a check_model job before training)."""
    return [m for m, spec in config["models"].items() if is_user_arch(spec.get("arch", ""))]


def is_script_model(spec: dict) -> bool:
    """A model trained by the researcher's own script (``train`` or ``command``, nondet.workflow.script)."""
    return "train" in spec or "command" in spec


def script_models(config: dict) -> list[str]:
    return [m for m, spec in config["models"].items() if is_script_model(spec)]


def audited_models(config: dict) -> list[str]:
    """Script models whose training jobs wait for a determinism audit."""
    return [m for m in script_models(config) if config["models"][m].get("audit", "fail") != "off"]


def script_files(spec: dict) -> list[str]:
    """The files whose content a script model's jobs depend on: ``script`` (files or folders), the
    module of ``train`` (found without importing it), and every existing file a ``command``
    names (e.g. train.py)."""
    import os
    import re
    import shlex
    import sys

    named = spec.get("script") or []
    files = [named] if isinstance(named, str) else list(named)
    if "train" in spec:
        parts = spec["train"].split(":")[0].split(".")
        roots = ([spec["pythonpath"]] if spec.get("pythonpath") else []) + ["."] + sys.path
        for root in roots:
            base = os.path.join(root, *parts)
            found = [p for p in (base + ".py", os.path.join(base, "__init__.py")) if os.path.isfile(p)]
            if found:
                files.append(os.path.normpath(found[0]))
                break
    if "command" in spec:
        words = shlex.split(re.sub(r"\{[a-z_]+\}", "X", spec["command"]))
        files += [w for w in words if os.path.isfile(w) and not os.path.isabs(w)]
    return list(dict.fromkeys(files))


def _file_digest(path: str) -> str:
    """SHA-256 of a file, or of every file under a folder (names and contents; no caches)."""
    import hashlib
    import os

    if os.path.isdir(path):
        h = hashlib.sha256()
        for folder, dirs, names in sorted(os.walk(path)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            for name in sorted(n for n in names if not n.endswith(".pyc")):
                full = os.path.join(folder, name)
                h.update(f"{os.path.relpath(full, path)}\0{_file_digest(full)}\0".encode())
        return h.hexdigest()
    return file_sha256(path) or "missing"


def script_spec(config: dict, model: str, changes: dict | None = None) -> dict:
    """What a script model's jobs depend on: its entry point or command, params (``changes``: a
    comparison arm's), pythonpath, and the SHA-256 of its script files (editing one reruns
    exactly its jobs)."""
    spec = config["models"][model]
    out = {"arch": "script", **{k: spec[k] for k in ("train", "command", "pythonpath", "data") if spec.get(k)}}
    out["params"] = {**spec.get("params", {}), **(changes or {})}
    out["files"] = {p: _file_digest(p) for p in script_files(spec)}
    # seeds are handed to scripts in 32 bits, labels and train_index are checked (docs/own-script.md)
    out["protocol"] = 2
    return out


def condition_sources(config: dict, condition: str) -> frozenset:
    """The sources that vary across the replicas of ``condition`` (built-in or config's)."""
    if condition in CONDITIONS:
        return CONDITIONS[condition]
    return frozenset(config["conditions"][condition])


def groups(config: dict) -> list[tuple[str, str]]:
    """Every (model, condition) pair the experiment trains."""
    return [(m, c) for m, spec in config["models"].items() for c in spec["conditions"]]


def run_groups(config: dict) -> list[tuple[str, str]]:
    """(model label, group name) of every imported group of runs (rules/runs.smk)."""
    return [(spec["model"], name) for name, spec in config["runs"]["groups"].items()]


def _chunked(n: int, per: int) -> list[list[int]]:
    return [list(range(i, min(i + per, n))) for i in range(0, n, per)]


def chunks(config: dict) -> list[list[int]]:
    """Replica indices trained by each job of a (model, condition)."""
    return _chunked(config["replicas"], config["replicas_per_job"])


def n_chunks(config: dict) -> int:
    return -(-config["replicas"] // config["replicas_per_job"])


def recipe(config: dict, model: str, condition: str | None = None) -> dict:
    """The training recipe of (model, condition): defaults, then model, then condition overrides
    (``condition`` None: the model's recipe without any condition's overrides)."""
    return {
        **config["training"],
        **config["models"][model]["training"],
        **(config["overrides"].get(model, {}).get(condition, {}) if condition else {}),
    }


def model_spec(config: dict, model: str, changes: dict | None = None) -> dict:
    """What builds the model: a built-in arch with its parameters (defaults filled by
    validation), or a user's callable with its params, feature module and folder. ``changes``:
    parameters of a comparison arm."""
    spec = config["models"][model]
    if is_script_model(spec):
        return script_spec(config, model, changes)
    if is_user_arch(spec["arch"]):
        out = {"arch": spec["arch"], "params": {**spec["params"], **(changes or {})}}
        return {**out, **{k: spec[k] for k in ("features", "pythonpath") if spec.get(k)}}
    return {"arch": spec["arch"], **spec["params"], **(changes or {})}


def data_spec(config: dict) -> dict:
    return dict(config["dataset"])


def data_inputs(config: dict) -> list[str]:
    """Files the dataset rule reads that Snakemake should watch (a user's array file)."""
    spec = config["dataset"]
    return [spec["path"]] if spec["name"] == "arrays" else []


def data_hash(config: dict) -> str:
    """The data set's identity: the hash of the config's dataset section and, for ``arrays``, of
    the file's SHA-256 (nondet.io.datasets.dataset_hash: the file is read, the hash kept while its stat
    is unchanged), so regenerating the file at the same path retrains from scratch."""
    from nondet.io.datasets import dataset_hash

    return dataset_hash(data_spec(config))


# --- training jobs: one base job, and what each kind adds --------------------------------------


def base_job(
    config: dict,
    model: str,
    condition: str,
    *,
    recipe_: dict | None = None,
    base_seed: int | None = None,
    changes: dict | None = None,
) -> dict:
    """The keys every training job has. ``recipe_``: instead of (model, condition)'s recipe;
    ``base_seed``: instead of the config's; ``changes``: architecture parameters to change.
    A script model has no recipe of ours (its params are in its model_spec)."""
    script = is_script_model(config["models"][model])
    job = {
        "experiment": config["experiment"],
        "model": model,
        "condition": condition,
        "base_seed": config["base_seed"] if base_seed is None else base_seed,
        "device": config["device"],
        "vectorize": config["vectorize"],
        "model_spec": model_spec(config, model, changes),
        "recipe": recipe(config, model, condition) if recipe_ is None else recipe_,
        "data_hash": data_hash(config),
        "code_version": CODE_VERSION,
    }
    if script:  # its own loop and recipe: no vectorised path or recipe of ours
        del job["vectorize"]
        job["recipe"] = _script_recipe(config, model, changes)
    return job


def _script_recipe(config: dict, model: str, changes: dict | None = None) -> dict:
    """A script's recipe is its own: the table's epochs column shows its params' epochs, if any."""
    epochs = {**config["models"][model].get("params", {}), **(changes or {})}.get("epochs")
    return {"epochs": epochs if isinstance(epochs, int) else None, "cycles": None}


def resampled(config: dict, job: dict, sources) -> dict:
    """``job`` whose recipe says how the ``data`` source resamples the training set, when
    ``sources`` vary it; any other job is left as it was (and keeps its hash)."""
    if "data" in sources:
        job["recipe"] = {**job["recipe"], "resample": dict(config["data_resampling"])}
    return job


def sealed(job: dict) -> dict:
    """``job`` with its ``spec_hash`` (the hash of everything else in it)."""
    job = {k: v for k, v in job.items() if k != "spec_hash"}
    return {**job, "spec_hash": spec_hash(job)}


def _explicit_seeds(sources, replicas, base_seed: int) -> list[dict]:
    """Per replica, a new seed for every source in ``sources``; the others at their base."""
    return [source_seeds(dict.fromkeys(sources, r), base_seed).as_dict() for r in replicas]


def condition_seeds(config: dict, condition: str, replicas, base_seed: int) -> list[dict]:
    """The seeds of each replica of ``condition``: a built-in condition's (nondet.seeds.replica_seeds)
    or, for a config-defined set of sources, a new seed per replica for each of them. Every job
    kind takes its seeds from the plan; the stages only read ``job["seeds"]``."""
    if condition in config["conditions"]:
        return _explicit_seeds(sorted(config["conditions"][condition]), replicas, base_seed)
    return [replica_seeds(condition, r, base_seed).as_dict() for r in replicas]


def _protocol_job(config: dict, model: str, condition: str, chunk: int) -> dict:
    """The protocol's training job of (model, condition), before any mitigation method's additions."""
    if not 0 <= chunk < n_chunks(config):
        raise ValueError(f"chunk {chunk} does not exist ({n_chunks(config)} chunks)")
    job = base_job(config, model, condition)
    job["replicas"] = chunks(config)[chunk]
    if condition in config["conditions"]:  # a config-defined set of sources
        job["sources"] = sorted(config["conditions"][condition])
    job["seeds"] = condition_seeds(config, condition, job["replicas"], job["base_seed"])
    return resampled(config, job, condition_sources(config, condition))


def mitigated(config: dict, model: str, condition: str) -> bool:
    """Whether (model, condition) is in the mitigation study (mitigation.models x conditions)."""
    mit = config["mitigation"]
    return model in mit["models"] and condition in mit["conditions"]


def train_job(config: dict, model: str, condition: str, chunk: int) -> dict:
    """Everything a training job depends on (a Snakemake param: changing it reruns the job).
    In the mitigation study, the protocol's run also keeps what the methods predicting with it
    need (recipe.averages: the EMA and SWA weights, which change nothing else of the run)."""
    if mitigated(config, model, condition):
        return run_job(config, model, condition, chunk, "plain")
    return sealed(_protocol_job(config, model, condition, chunk))


def run_recipe(config: dict, run: str) -> dict:
    """What the configured mitigation methods training with ``run`` add to its recipe
    (their plug-ins' ``recipe``; one level of nested keys merged, e.g. averages)."""
    out = {}
    for weights in configured_weights(config):
        plugin = REGISTRY[weights]
        if plugin.run != run:
            continue
        for key, value in plugin.recipe(config["mitigation"]).items():
            out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def run_job(config: dict, model: str, condition: str, chunk: int, run: str) -> dict:
    """The training job of a mitigation method's run ``run`` (plain: the protocol's run; else a
    run of its own): the protocol's job with the recipe additions of the methods using it."""
    if run != "plain" and run not in training_runs(config):
        raise ValueError(
            f"no configured mitigation method trains a run {run!r}; runs: {', '.join(training_runs(config))}"
        )
    job = _protocol_job(config, model, condition, chunk)
    job["recipe"] = {**job["recipe"], **run_recipe(config, run)}
    return sealed(job)


def budget_job(config: dict, model: str, condition: str, epochs: int, chunk: int, run="plain") -> dict:
    """A training job of the budget study (rules/budget.smk): a method's run (``run``: plain, the
    protocol's job with its methods' additions, or a run of its own, e.g. snapshot), with the
    recipe's epochs replaced by ``epochs``."""
    job = run_job(config, model, condition, chunk, run)
    job["recipe"] = {**job["recipe"], "epochs": epochs}
    return sealed(job)


def audit_job(config: dict, model: str) -> dict:
    """The determinism audit of a script model: control twice, then each source its conditions
    vary, alone (nondet.workflow.script.audit_script)."""
    job = base_job(config, model, "audit")
    sources = set().union(*(condition_sources(config, c) for c in config["models"][model]["conditions"]))
    job["sources"] = [s for s in SOURCES if s in sources]
    job["on_failure"] = config["models"][model].get("audit", "fail")
    control = replica_seeds("control", 0, job["base_seed"]).as_dict()
    job["runs"] = [{"name": "control", "seeds": control}, {"name": "control again", "seeds": control}]
    job["runs"] += [{"name": s, "seeds": source_seeds({s: 0}, job["base_seed"]).as_dict()} for s in job["sources"]]
    if {"init", "shuffle"} <= set(job["sources"]):  # one seed driving both gives the control's logits
        swapped = {**control, "init": control["shuffle"], "shuffle": control["init"]}
        job["runs"].append({"name": "init and shuffle swapped", "seeds": swapped})
    return sealed(resampled(config, job, job["sources"]))


def divergence_job(config: dict, model: str) -> dict:
    """The twin-divergence job of ``model`` (base run = replica 0 of control)."""
    job = base_job(config, model, "control")
    del job["vectorize"]  # twins always train one after another
    job["twins"] = config["divergence"]["twins"]
    job["runs"] = [
        {"name": name, "condition": condition, "seeds": replica_seeds(condition, r, job["base_seed"]).as_dict()}
        for name, condition, r in twin_runs(job["twins"])
    ]
    job["record_points"] = config["divergence"]["record_points"]
    return sealed(job)


def comparison_chunks(config: dict, name: str) -> list[list[int]]:
    return _chunked(config["comparisons"][name]["replicas"], config["replicas_per_job"])


def comparison_job(config: dict, name: str, arm: str, chunk: int) -> dict:
    """Training job of one arm of a comparison; the arms draw independent seeds."""
    spec = config["comparisons"][name]
    model = spec["model"]
    # sources: an arbitrary set varies, with explicit seeds (no per-condition recipe overrides)
    condition = spec.get("condition") or "sources:" + "+".join(spec["sources"])
    job = base_job(
        config,
        model,
        condition,
        recipe_={**recipe(config, model, condition), **spec[arm]["training"]},
        base_seed=derive_seed(config["base_seed"], 1 + ["baseline", "candidate"].index(arm)),
        changes=spec[arm]["params"],
    )
    job.update(comparison=name, arm=arm, replicas=comparison_chunks(config, name)[chunk])
    if "sources" in spec:
        job["seeds"] = _explicit_seeds(spec["sources"], job["replicas"], job["base_seed"])
    else:
        job["seeds"] = condition_seeds(config, condition, job["replicas"], job["base_seed"])
    varying = spec["sources"] if "sources" in spec else condition_sources(config, condition)
    return sealed(resampled(config, job, varying))


def factorial_cells(config: dict, name: str) -> list[tuple[int, ...]]:
    spec = config["factorial"][name]
    return list(itertools.product(*(range(n) for n in spec["levels"])))


def factorial_chunks(config: dict, name: str) -> list[list[int]]:
    return _chunked(len(factorial_cells(config, name)), config["replicas_per_job"])


def factorial_job(config: dict, name: str, chunk: int) -> dict:
    """Training job of some cells of a factorial design; explicit seeds per replica."""
    spec = config["factorial"][name]
    cells = factorial_cells(config, name)
    replicas = factorial_chunks(config, name)[chunk]
    # the model's recipe, without any condition's overrides
    job = base_job(config, spec["model"], "factorial", recipe_=recipe(config, spec["model"]))
    job.update(
        factorial=name,
        sources=spec["sources"],
        replicas=replicas,
        cells=[list(cells[r]) for r in replicas],
        seeds=[factorial_seeds(spec["sources"], cells[r], config["base_seed"]).as_dict() for r in replicas],
    )
    return sealed(resampled(config, job, spec["sources"]))


# --- mitigation: the job a method's predictions come from--------------------------------------


def mitigation_job(config: dict, model: str, condition: str, chunk: int, method: str) -> dict:
    """The training job whose replicas ``method`` predicts with, in the mitigation study."""
    run = trained_run(method)
    return (
        train_job(config, model, condition, chunk) if run == "plain" else run_job(config, model, condition, chunk, run)
    )


# --- the plan's size ---------------------------------------------------------------------------


def plan_size(config: dict) -> int:
    """How many jobs the full workflow plans (an upper bound, by arithmetic: no lists built)."""
    per = config["replicas_per_job"]
    ch = n_chunks(config)
    n = 10 + len(config["models"])  # data set, tables, figures, provenance
    n += len(groups(config)) * (2 * ch + 1)  # train + predict per chunk, metrics
    mit = config["mitigation"]
    runs, methods = len(training_runs(config)), len(mitigation_methods(config))
    # the methods' own runs' training, each method's predictions and metrics
    n += len(mit["models"]) * len(mit["conditions"]) * ((runs - 1) * ch + methods * (ch + 1))
    n += len(mit["models"]) * len(mit["conditions"]) + bool(mit["models"])  # ensembles, their table
    budget = config["budget"]
    n_budget = len(budget["models"]) * len(mit["conditions"]) * len(budget["epochs"])
    n += n_budget * (runs * ch + len(budget_methods(config)) * (ch + 1)) + bool(n_budget)  # + its table
    n += 2 * len(config["divergence"]["models"])
    for spec in config["comparisons"].values():
        n += 4 * -(-spec["replicas"] // per) + 1
    for spec in config["factorial"].values():
        n += 2 * -(-math.prod(spec["levels"]) // per) + 1
    runs = config.get("runs", {})
    n += 3 * len(runs.get("groups", {})) + len(runs.get("comparisons", {})) + 1  # imported runs
    return n
