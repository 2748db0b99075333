"""The checks a schema cannot express, run on a validated config with its defaults filled in:
cross-references (models, conditions, sections, comparisons, runs), recipes that cannot train
(cycles, warm-up, bitflip tensors, resampling), user models and training scripts checked without
importing them, and the plan's size. Each raises ConfigError naming the key and the fix; none
changes the config (the defaults a schema cannot state are filled by nondet.workflow.config).

Also the built-in architectures' parameter defaults (ARCH_PARAMS), which the checks and the
validation entry both need. Imported by the Snakefile (through nondet.workflow.config), so it
must stay light: no torch.
"""

from __future__ import annotations

import math
import re

from nondet.methods import REGISTRY, Method, MethodError
from nondet.schema import cached_schema, defaults
from nondet.seeds import CONDITIONS
from nondet.workflow.config_errors import STRICT, ConfigError, hint, key_path, unknown_keys
from nondet.workflow.plan import condition_sources, groups, is_script_model, is_user_arch, plan_size, recipe

#: Keyword arguments of each built-in architecture, with their defaults: the schema's
#: ``$defs.params_<arch>`` (tests check them against the model classes, so they cannot drift).
ARCH_PARAMS = {
    name[len("params_") :]: defaults(node)
    for name, node in cached_schema()["$defs"].items()
    if name.startswith("params_")
}


def check(config: dict) -> None:
    """Every check below, in order, on a config the schema has validated and whose defaults
    (nondet.workflow.config) are filled; raises ConfigError at the first failure."""
    _check_semantics(config)
    _check_sections(config)
    _check_comparisons(config)
    _check_bitflip_tensors(config)
    _check_runs(config)
    _check_resampling(config)
    _check_plan_size(config)


#: Training-set sizes of the built-in data sets (mnist1d: 80 % of num_samples)
TRAIN_SIZES = {"cifar10": 50000, "cifar100": 50000, "mnist": 60000, "fashion_mnist": 60000, "svhn": 73257}


def _check_resampling(config: dict) -> None:
    """A ``data_resampling.fraction`` leaving fewer than 2 training examples, refused here with
    the resulting size when the data set's size is known from the config (else by the training
    job, nondet.training.resample)."""
    from nondet.training.resample import resample_size

    data = config["dataset"]
    n = int(data.get("num_samples", 5000) * 0.8) if data["name"] == "mnist1d" else TRAIN_SIZES.get(data["name"])
    if data.get("n_train") is not None:
        n = data["n_train"] if n is None else min(n, data["n_train"])
    if n is None:
        return
    ours = [m for m, spec in config["models"].items() if spec.get("data") != "script"]  # data: script: its own set
    varying = [condition_sources(config, c) for m, c in groups(config) if m in ours]
    varying += [
        set(s.get("sources") or CONDITIONS.get(s.get("condition"), ()))
        for s in config["comparisons"].values()
        if s["model"] in ours
    ]
    varying += [set(s["sources"]) for s in config["factorial"].values()]
    if not any("data" in v for v in varying):
        return
    spec = config["data_resampling"]
    m = resample_size(n, spec["fraction"])
    if m < 2:
        raise ConfigError(
            f"config key data_resampling.fraction: {spec['fraction']} of the {n} training examples "
            f"leaves {m} to train on (a {spec['kind']} of round({spec['fraction']} x {n})); use a "
            f"fraction of at least {2 / n:.2g}"
        )


_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"


def _check_pythonpath(key: str, model: dict) -> str | None:
    """A model's ``pythonpath`` (user model or training script) names an existing folder; it."""
    import os

    folder = model.get("pythonpath")
    if folder is not None and not os.path.isdir(folder):
        raise ConfigError(f"{key}.pythonpath: folder {folder!r} not found (relative to {os.getcwd()})")
    return folder


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
    folder = _check_pythonpath(key, model)
    top = arch.split(":")[0].split(".")[0]
    found = importlib.machinery.PathFinder.find_spec(top, [os.path.abspath(folder)]) if folder else None
    if found is None and importlib.util.find_spec(top) is None:
        where = f"in {folder!r} nor " if folder else ""
        raise ConfigError(
            f"{key}.arch: model {name!r}: module {top!r} of {arch!r} is found neither {where}on "
            "PYTHONPATH (set models.<name>.pythonpath to the folder that holds it)"
        )


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


def _check_arm_params(key: str, arch: str, params: dict) -> None:
    """A comparison arm's parameter changes, against the schema's ``$defs.params_<arch>``."""
    schema = cached_schema()
    sub = {**schema["$defs"][f"params_{arch}"], "$defs": schema["$defs"]}
    for e in sorted(STRICT(sub).iter_errors(params), key=lambda e: list(e.absolute_path)):
        if e.validator == "additionalProperties":
            raise ConfigError(unknown_keys(e)[0].replace("config key ", f"config key {key}.", 1))
        raise ConfigError(f"config key {key_path([key, *e.absolute_path])}: {e.message}{hint(e)}")


def _check_owned_command(key: str, model: dict) -> None:
    """A ``data: script`` model has no data set of the pipeline's: its command may not name one
    (``{data}``, ``{train_data}``, ``{train_index}``: nondet.workflow.script fills them in only
    for a model on the pipeline's data)."""
    import string

    if "command" not in model:
        return
    try:
        named = {f for _, f, _, _ in string.Formatter().parse(model["command"]) if f}
    except ValueError:
        return  # a malformed template: refused with the placeholders when the job fills it in
    bad = [f for f in ("data", "train_index", "train_data") if f in named]
    if bad:
        raise ConfigError(
            f"{key}.command: {', '.join('{' + f + '}' for f in bad)} name(s) the pipeline's data set, which a "
            "model with data: script does not have (its script owns its data): load your own data, and with "
            "the data source on draw the replica's resample with `python -m nondet resample --resample "
            "{resample_json} --n N --out idx.npy` (docs/own-script.md)"
        )


def _check_script_model(config: dict, name: str, model: dict) -> bool:
    """A model trained by the researcher's own script (train/command): True after checking it;
    False for an arch model. Exactly one of arch, train and command."""

    key = f"config key models.{name}"
    given = [k for k in ("arch", "train", "command") if k in model]
    if len(given) != 1:
        raise ConfigError(
            f"{key}: give exactly one of arch (a built-in or 'package.module:build'), train "
            f"('package.module:main', your training script) or command (any program)"
            + (f"; got {', '.join(given)}" if given else "")
        )
    if given == ["arch"]:
        for k in ("script", "audit", "timeout", "data"):
            if k in model:
                raise ConfigError(f"{key}.{k}: only for a training script (train or command)")
        return False
    if "train" in model and not re.fullmatch(f"{_DOTTED}:{_DOTTED}", model["train"]):
        raise ConfigError(f"{key}.train: {model['train']!r} is not an import path 'package.module:main'")
    for k in ("features", "training"):
        if model.get(k):
            raise ConfigError(
                f"{key}.{k}: a training script has its own recipe and writes its own features (ctx.save); "
                "put its hyperparameters under params"
            )
    _check_pythonpath(key, model)
    if model.get("data") == "script":  # its own test set: the audit records the labels every job checks
        if model.get("audit") == "off":
            raise ConfigError(
                f"{key}.data: script needs the audit (audit: fail or warn): it records the SHA-256 of "
                "the script's test labels, which every replica, condition and comparison arm must match"
            )
        _check_owned_command(key, model)
    for section in ("divergence", "mitigation", "budget"):
        if name in config[section]["models"]:
            raise ConfigError(
                f"config key {section}.models: model {name!r} is a training script; the {section} study "
                "needs the pipeline's own training loop (checkpoints, snapshots, twins)"
            )
    for fname, spec in config["factorial"].items():
        if spec["model"] == name:
            raise ConfigError(
                f"config key factorial.{fname}.model: model {name!r} is a training script; factorial "
                "designs train built-in and import-path models only (compare its recipes under comparisons)"
            )
    return True


def _check_semantics(config: dict) -> None:
    _check_conditions(config)
    for name, model in config["models"].items():
        if _check_script_model(config, name, model):
            continue
        if is_user_arch(model["arch"]) or model["arch"] not in ARCH_PARAMS:
            _check_user_model(name, model)
            continue
        for key in ("features", "pythonpath"):
            if key in model:
                raise ConfigError(
                    f"config key models.{name}.{key}: only for a user model (arch "
                    f"'package.module:callable'); {model['arch']!r} is built in"
                )
        params = model["params"]  # typed by the schema, defaults filled (nondet.workflow.config)
        for condition in model["conditions"]:
            # "all" varies dropout only where there is some; any other condition must have it
            varies = condition != "all" and "dropout" in condition_sources(config, condition)
            if varies and not params.get("dropout", 0) > 0:
                raise ConfigError(
                    f"config key models.{name}.conditions: condition {condition!r} varies dropout, "
                    f"which cannot apply to model {name!r} ({model['arch']}, "
                    f"dropout={params.get('dropout', 0)}): it has no dropout"
                )
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
    for section in ("divergence", "stability", "mitigation", "budget"):
        for name in config[section]["models"]:
            if name not in models:
                raise ConfigError(f"config key {section}.models: unknown model {name!r} (models: {', '.join(models)})")
    mit = config["mitigation"]
    if isinstance(mit["tta"], list):
        names = [item if isinstance(item, str) else item["name"] for item in mit["tta"]]
        for name in {n for n in names if names.count(n) > 1}:
            raise ConfigError(f"config key mitigation.tta: two specs are named {name!r}")
        for name in names:  # each names the methods tta:<name> and snapshot+tta:<name>
            try:
                Method.parse(f"tta:{name}")
            except MethodError as e:
                raise ConfigError(f"config key mitigation.tta: spec name {name!r}: {e}") from None
    for method in mit["methods"]:
        if method not in REGISTRY or method == "plain":
            known = ", ".join(n for n in REGISTRY if n != "plain")
            raise ConfigError(
                f"config key mitigation.methods: unknown method {method!r}; known: {known} (or a plug-in "
                "registered by a module of mitigation.plugins)"
            )
    averaging = [m for m in mit["methods"] if m in ("ema", "swa")]
    for section in ("mitigation", "budget"):
        for name in config[section]["models"] if averaging else ():
            if is_script_model(models[name]):
                raise ConfigError(
                    f"config key mitigation.methods: {', '.join(averaging)} average weights while our loop "
                    f"trains, but {section}.models lists {name!r}, trained by its own script; remove "
                    f"{', '.join(averaging)} from mitigation.methods or {name!r} from {section}.models"
                )
    for name in mit["models"]:
        _check_runs_conditions(config, name, "mitigation.conditions", "its plain replicas are the baseline")
        for condition in mit["conditions"]:
            epochs = recipe(config, name, condition)["epochs"]
            if "snapshot" in mit["methods"] and epochs % mit["snapshot_cycles"]:
                raise ConfigError(
                    f"config key mitigation.snapshot_cycles: {mit['snapshot_cycles']} cycles do "
                    f"not divide the {epochs} epochs of {name}/{condition}"
                )
    _check_budget(config)


def _check_runs_conditions(config: dict, name: str, key: str, why: str) -> None:
    """Model ``name`` must run every condition of mitigation.conditions."""
    for condition in config["mitigation"]["conditions"]:
        if condition not in config["models"][name]["conditions"]:
            raise ConfigError(f"config key {key}: model {name!r} does not run condition {condition!r} ({why})")


def _check_budget(config: dict) -> None:
    """budget: every model runs the mitigation conditions; every budget splits into the plain
    recipe's cycles and into mitigation.snapshot_cycles, with room beside any warm-up."""
    budget, cycles = config["budget"], config["mitigation"]["snapshot_cycles"]
    if not budget["models"]:
        return
    for i, epochs in enumerate(budget["epochs"]):
        if "snapshot" in config["mitigation"]["methods"] and epochs % cycles:
            raise ConfigError(
                f"config key budget.epochs.{i}: {epochs} epochs are not divisible by the {cycles} "
                "cycles of mitigation.snapshot_cycles (the snapshot run splits each budget into them)"
            )
    for name in budget["models"]:
        _check_runs_conditions(config, name, "budget.models", "of mitigation.conditions, which the budget study trains")
        for condition in config["mitigation"]["conditions"]:
            r = recipe(config, name, condition)
            for i, epochs in enumerate(budget["epochs"]):
                if epochs % r["cycles"]:
                    raise ConfigError(
                        f"config key budget.epochs.{i}: the {r['cycles']} cycles of the recipe of "
                        f"{name}/{condition} (training.cycles) do not divide {epochs} epochs"
                    )
                if r["warmup_epochs"] * max(cycles, r["cycles"]) >= epochs:
                    raise ConfigError(
                        f"config key budget.epochs.{i}: at {epochs} epochs the warm-up of "
                        f"{name}/{condition} ({r['warmup_epochs']} epochs per cycle, "
                        f"training.warmup_epochs) fills each of its {max(cycles, r['cycles'])} cycles"
                    )


def _check_verdict_keys(key: str, spec: dict) -> None:
    """A comparison's margin must be a positive size (non-inferiority is margin_kind's business)."""
    margin = spec.get("margin")
    for metric, value in ({"accuracy": margin} if isinstance(margin, (int, float)) else margin or {}).items():
        if not value > 0:
            suffix = "" if isinstance(margin, (int, float)) else f".{metric}"
            raise ConfigError(
                f"config key {key}.margin{suffix}: {value} — a margin is the size of a difference "
                "that does not matter, > 0 (for non-inferiority set margin_kind: non_inferiority)"
            )


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
        arch = models[spec["model"]].get("arch", "script")
        params = {**ARCH_PARAMS.get(arch, {}), **models[spec["model"]]["params"]}
        for arm in ("baseline", "candidate"):
            if arch == "script" and spec[arm]["training"]:
                raise ConfigError(
                    f"config key comparisons.{name}.{arm}.training: model {spec['model']!r} is a training "
                    "script; change its params instead"
                )
            if is_user_arch(arch) or arch == "script":  # checked by the callable / the script itself
                continue
            _check_arm_params(f"comparisons.{name}.{arm}.params", arch, spec[arm]["params"])
            varying = spec["sources"] if "sources" in spec else [spec["condition"]]
            if "dropout" in varying and not {**params, **spec[arm]["params"]}.get("dropout"):
                raise ConfigError(f"config key comparisons.{name}.condition: {arm} has no dropout")
        if spec["baseline"] == spec["candidate"]:
            raise ConfigError(f"config key comparisons.{name}: baseline and candidate are identical")
        _check_verdict_keys(f"comparisons.{name}", spec)
    for name, spec in config["factorial"].items():
        if len(spec["levels"]) != len(spec["sources"]):
            raise ConfigError(
                f"config key factorial.{name}.levels: one number per source "
                f"({len(spec['sources'])} sources, {len(spec['levels'])} levels)"
            )
        arch = models[spec["model"]].get("arch", "script")
        dropout = {**ARCH_PARAMS.get(arch, {}), **models[spec["model"]]["params"]}.get("dropout", 0)
        if "dropout" in spec["sources"] and not dropout and not is_user_arch(arch) and arch != "script":
            raise ConfigError(f"config key factorial.{name}.sources: model has no dropout")


def _bitflip_key(config: dict, model: str, condition: str | None) -> str:
    """The config key that set (model, condition)'s bitflip_tensor."""
    if condition and "bitflip_tensor" in config["overrides"].get(model, {}).get(condition, {}):
        return f"overrides.{model}.{condition}.bitflip_tensor"
    if "bitflip_tensor" in config["models"][model]["training"]:
        return f"models.{model}.training.bitflip_tensor"
    return "training.bitflip_tensor"


def _check_bitflip_tensors(config: dict) -> None:
    """Every built-in model's bitflip_tensor (the model's recipe, each condition's and each
    comparison arm's) names one of its parameters: otherwise each of its bitflip jobs (and
    divergence twins) would raise at its first step. User models: the check_model job."""
    from nondet.workflow.paramnames import parameter_names, weight_names

    cases = []  # (key, model, params, tensor)
    for name, model in config["models"].items():
        if "arch" not in model or is_user_arch(model["arch"]):  # a training script, or a user model
            continue
        for condition in [None, *model["conditions"], *config["overrides"].get(name, {})]:
            tensor = recipe(config, name, condition).get("bitflip_tensor")
            cases.append((_bitflip_key(config, name, condition), name, model["params"], tensor))
    for cname, spec in config["comparisons"].items():
        model = config["models"][spec["model"]]
        if "arch" not in model or is_user_arch(model["arch"]):
            continue
        for arm in ("baseline", "candidate"):
            r = {**recipe(config, spec["model"], spec.get("condition")), **spec[arm]["training"]}
            key = f"comparisons.{cname}.{arm}"
            if "bitflip_tensor" not in spec[arm]["training"]:
                key += f" (the recipe of model {spec['model']})"
            cases.append((key, spec["model"], {**model["params"], **spec[arm]["params"]}, r.get("bitflip_tensor")))
    for key, name, params, tensor in cases:
        arch = config["models"][name]["arch"]
        if tensor is not None and tensor not in parameter_names(arch, params):
            raise ConfigError(
                f"config key {key}: bitflip_tensor {tensor!r} is not a parameter of model {name!r} "
                f"({arch}; its conv/linear weights: {', '.join(weight_names(arch, params))}; every "
                f"parameter: {', '.join(parameter_names(arch, params))}); set it per model under "
                f"models.{name}.training.bitflip_tensor (null: any conv/linear weight)"
            )


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
    # every job spec lists its replicas: few jobs of huge replicas_per_job plan slowly too
    replicas = config["replicas"] * len(groups(config))
    replicas += sum(2 * spec["replicas"] for spec in config["comparisons"].values())
    replicas += sum(math.prod(spec["levels"]) for spec in config["factorial"].values())
    limit = config["max_replicas"] or 10 * config["max_jobs"]
    if replicas > limit:
        key = "max_replicas" if config["max_replicas"] else "max_replicas (default 10 x max_jobs)"
        raise ConfigError(
            f"config key replicas: this configuration trains about {replicas} replicas, more than "
            f"{key} = {limit} (replicas {config['replicas']} x {len(groups(config))} (model, "
            "condition) groups, plus comparisons and factorial cells; replicas_per_job "
            f"{config['replicas_per_job']}). Lower replicas (or comparisons/factorial sizes), or "
            "raise max_replicas if you really mean it."
        )


# --- bring your own runs (rules/runs.smk) -----------------------------------------------------


def _check_runs(config: dict) -> None:
    """Cross-references of runs.groups / runs.comparisons (their defaults are the schema's)."""
    runs = config["runs"]
    if not config["models"] and not runs["groups"]:
        raise ConfigError("config key models: no models to train and no runs.groups to analyse")
    for name, spec in runs["groups"].items():
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
        _check_verdict_keys(f"runs.comparisons.{name}", spec)
        for arm in ("baseline", "candidate"):
            if spec.get("paired_by") and not runs["groups"][spec[arm]]["metadata"]:
                raise ConfigError(
                    f"config key runs.comparisons.{name}.paired_by: group {spec[arm]!r} has no "
                    "metadata CSV to pair its runs by"
                )
    if runs["all_pairs"] and len(runs["groups"]) < 2:
        raise ConfigError("config key runs.all_pairs: needs at least 2 groups")
