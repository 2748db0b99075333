# Helpers only: validate the config and compute paths and params with the nondet package.
import os
import sys
from nondet.workflow import config as cfg
from nondet.workflow import plan
from nondet.workflow import plan_methods
from nondet.workflow import expect
from nondet.workflow import shown
from nondet.io.files import job_expect
from nondet.workflow import codehash
from nondet.io.h5io import CODE_VERSION
from nondet.methods import Method, predictions_path

try:
    # duplicate keys: Snakemake's YAML loader silently keeps the last value
    cfg.check_config_files(workflow.configfiles)
    _validated = cfg.validate(config)
except cfg.ConfigError as e:
    raise WorkflowError(str(e)) from None
config.clear()
config.update(_validated)

# the repository (this file's folder's parent), also when the workflow runs as a module from
# another folder, where workflow.basedir is the user's folder
REPO_DIR = os.path.dirname(os.path.abspath(workflow.current_basedir))


def code(script, kept=None):
    """The ``code`` param of the jobs of workflow_scripts/<script>.py, the hash of the package
    code it reaches (nondet.workflow.codehash), so an edit that can change its outputs reruns its
    jobs and a cosmetic one nothing. ``kept`` (training rules: their output pattern): under
    code_changes: warn, an output made by other code keeps its hash and is listed in a warning.
    """
    digest = codehash.script_hash(f"{REPO_DIR}/workflow_scripts/{script}.py")
    if kept and config["code_changes"] == "warn":
        # a function of the wildcards only: Snakemake compares no param derived from the output
        return codehash.kept(digest, kept)
    return digest


if config["code_changes"] == "warn":
    codehash.warn_at_exit(logger.warning)  # the trained files kept, after the plan

GROUPS = plan.groups(config)
RUN_GROUPS = plan.run_groups(config)  # imported runs (rules/runs.smk)
CHUNKS = range(len(plan.chunks(config)))
MODELS = list(config["models"])
DATA = f"results/data/{config['dataset']['name']}.h5"
# Every intermediate file pattern, named once: rules and the helpers below use these names.
TRAIN = "results/train/{model}/{condition}/chunk{chunk}.h5"
PREDICT = predictions_path("plain")
METRICS = "results/metrics/{model}/{condition}.h5"
MITIGATION_TRAIN = "results/mitigation/train/{model}/{condition}/{run}/chunk{chunk}.h5"
MITIGATION_PREDICT = predictions_path("{method}")
MITIGATION_METRICS = "results/mitigation/metrics/{model}/{condition}/{method}.h5"
BUDGET_TRAIN = (
    "results/budget/{model}/{condition}/e{epochs}/train/{run}/chunk{chunk}.h5"
)
BUDGET_PREDICT = predictions_path("{method}", epochs="{epochs}")
BUDGET_METRICS = "results/budget/{model}/{condition}/e{epochs}/metrics/{method}.h5"
DIVERGENCE = "results/divergence/{model}.h5"
ARM_TRAIN = "results/compare/{name}/{arm}/train_chunk{chunk}.h5"
ARM_PREDICT = "results/compare/{name}/{arm}/predict_chunk{chunk}.h5"
FACTORIAL_TRAIN = "results/factorial/{name}/train_chunk{chunk}.h5"
FACTORIAL_PREDICT = "results/factorial/{name}/predict_chunk{chunk}.h5"

# GPUs per training/prediction job (SLURM: --gpus=N; locally, --resources gpu=N limits how many
# run at once): config gpus_per_job; its schema default, auto, is resolved here (the only place):
# 1 when the device is cuda, 0 otherwise.
GPU_JOB = config["gpus_per_job"]
if GPU_JOB == "auto":
    GPU_JOB = 1 if config["device"] == "cuda" else 0


wildcard_constraints:
    model="|".join(MODELS),
    condition="|".join(sorted({c for _, c in GROUPS})),
    chunk=r"\d+",
    method="|".join(plan_methods.mitigation_methods(config).values()),
    arm="baseline|candidate",
    epochs=r"\d+",
    run="|".join(plan_methods.training_runs(config)),
    name=r"[A-Za-z0-9_\-]+",


def predict_files(model, condition):
    return expand(
        PREDICT,
        model=model,
        condition=condition,
        chunk=CHUNKS,
    )


def metric_files(model=None):
    return [
        METRICS.format(model=m, condition=c)
        for m, c in GROUPS + RUN_GROUPS
        if model is None or m == model
    ]


def figure_files():
    return expand(
        "results/figures/diversity_{model}.{ext}", model=MODELS, ext=("pdf", "png")
    )


def train_job(wildcards):
    return plan.train_job(
        config, wildcards.model, wildcards.condition, int(wildcards.chunk)
    )


def metrics_params(wildcards):
    method = method_of(wildcards.method) if hasattr(wildcards, "method") else "plain"
    return expect.metrics_params(config, wildcards.model, wildcards.condition, method)


def metrics_expect(paths):
    """What each metrics file in ``paths`` must carry (spec, data and code version)."""
    out = {}
    for p in paths:
        parts = p.split("/")
        if (
            parts[1] == "mitigation"
        ):  # results/mitigation/metrics/{model}/{condition}/{tag}.h5
            m, c, tag = parts[3], parts[4], parts[5][: -len(".h5")]
            out[p] = expect.metrics_expect(config, m, c, method_of(tag))
        elif parts[1] == "budget":
            # results/budget/{model}/{condition}/e{epochs}/metrics/{tag}.h5
            m, c, e, tag = parts[2], parts[3], int(parts[4][1:]), parts[6][:-3]
            out[p] = expect.metrics_expect(config, m, c, budget_method_of(tag), e)
        elif (parts[2], parts[3][: -len(".h5")]) in RUN_GROUPS:  # imported runs
            out[p] = expect.runs_metrics_expect(
                config, parts[2], parts[3][: -len(".h5")]
            )
        else:  # results/metrics/{model}/{condition}.h5
            out[p] = expect.metrics_expect(config, parts[2], parts[3][: -len(".h5")])
    return shown.expectations(out)


# --- instability (divergence, stability by family) and mitigation ---
METHOD_TAGS = plan_methods.mitigation_methods(config)


def instability_targets():
    models = config["divergence"]["models"]
    out = expand(
        "results/figures/divergence_{model}.{ext}", model=models, ext=("pdf", "png")
    )
    if config["stability"]["models"]:
        out += [
            "results/tables/stability.csv",
            "results/figures/stability_by_family.png",
        ]
    return out


def mitigation_targets():
    return ["results/tables/mitigation.csv"] if config["mitigation"]["models"] else []


def stability_metric_files():
    return [
        METRICS.format(model=m, condition=c)
        for m, c in GROUPS
        if m in config["stability"]["models"] and c in ("init", "bitflip", "all")
    ]


def mitigation_metric_files():
    mit = config["mitigation"]
    files = []
    for m in mit["models"]:
        for c in mit["conditions"]:
            files.append(METRICS.format(model=m, condition=c))
            files += [
                MITIGATION_METRICS.format(model=m, condition=c, method=t)
                for t in METHOD_TAGS.values()
            ]
    return files


def divergence_job(wildcards):
    return plan.divergence_job(config, wildcards.model)


def mitigation_run_job(wildcards):
    """The training job of a mitigation method's own run (snapshot, or a plug-in's)."""
    w = wildcards
    return plan.run_job(config, w.model, w.condition, int(w.chunk), w.run)


def method_of(tag):
    return Method.from_tag(tag, METHOD_TAGS).name


def tta_of(wildcards):
    return plan_methods.tta_spec(config, method_of(wildcards.method))


def mitigation_train_file(wildcards):
    # TTA, EMA and SWA predict with the protocol's replicas (which keep the averages)
    run = plan_methods.trained_run(method_of(wildcards.method))
    if run == "plain":
        return TRAIN.format(**wildcards)
    return MITIGATION_TRAIN.format(run=run, **wildcards)


def mitigation_predict_job(wildcards):
    w = wildcards
    method = method_of(w.method)
    return plan.mitigation_job(config, w.model, w.condition, int(w.chunk), method)


# --- mitigation versus training budget (rules/budget.smk) ---
BUDGET_TAGS = plan_methods.budget_methods(config)


def budget_method_of(tag):
    return Method.from_tag(tag, BUDGET_TAGS).name


def budget_metric_files(wildcards):
    budget = config["budget"]
    if not budget["models"]:
        raise WorkflowError(
            "config key budget.models is empty: name the models of the budget study, e.g. "
            "budget: {models: [cnn]}"
        )
    return expand(
        BUDGET_METRICS,
        model=budget["models"],
        condition=config["mitigation"]["conditions"],
        epochs=sorted(budget["epochs"]),
        method=BUDGET_TAGS.values(),
    )


def budget_job(wildcards):
    """The training job of a budget run (train_budget) or behind a method (predict_budget)."""
    w = wildcards
    run = w.get("run") or plan_methods.trained_run(budget_method_of(w.method))
    epochs, chunk = int(w.epochs), int(w.chunk)
    return plan.budget_job(config, w.model, w.condition, epochs, chunk, run)


def budget_train_file(wildcards):
    run = plan_methods.trained_run(budget_method_of(wildcards.method))
    return BUDGET_TRAIN.format(run=run, **wildcards)


def budget_metrics_params(wildcards):
    w = wildcards
    method = budget_method_of(w.method)
    return expect.metrics_params(config, w.model, w.condition, method, int(w.epochs))


# --- comparisons and factorial designs ---
def arm_predictions(name, arm):
    return [
        ARM_PREDICT.format(name=name, arm=arm, chunk=c)
        for c in range(len(plan.comparison_chunks(config, name)))
    ]


def factorial_predictions(name):
    return [
        FACTORIAL_PREDICT.format(name=name, chunk=c)
        for c in range(len(plan.factorial_chunks(config, name)))
    ]


def compare_params(wildcards):
    return expect.compare_params(config, wildcards.name)


def factorial_params(wildcards):
    return expect.factorial_params(config, wildcards.name)


def compare_targets():
    return [f"results/compare/{n}/verdict.csv" for n in config["comparisons"]] + [
        f"results/factorial/{n}/components.csv" for n in config["factorial"]
    ]


# --- a researcher's own model ---
def model_check(model):
    """The check_model output a user model's training jobs wait for; none for built-ins."""
    return [f"results/checks/{model}.json"] if model in plan.user_models(config) else []


# --- a researcher's own training script (rules/script.smk) ---
SCRIPT_MODELS = "|".join(plan.script_models(config)) or "(?!)"
SCRIPT_COMPARISONS = (
    "|".join(
        n
        for n, s in config["comparisons"].items()
        if s["model"] in plan.script_models(config)
    )
    or "(?!)"
)


def script_data(model):
    """The pipeline's data set, which a script model's jobs read; none for a script that owns
    its data (data: script), so a config of such models alone builds no data set."""
    return [] if config["models"][model].get("data") == "script" else [DATA]


def script_audit(model):
    """The audit a script model's training jobs wait for (none with audit: off)."""
    if model in plan.audited_models(config):
        return [f"results/checks/{model}.audit.json"]
    return []


# --- one config per report (nondet.workflow.reportcheck) ---
def provenance_inputs(wildcards):
    """Every table and figure of rule all, which provenance.csv lists with their SHA-256; under
    --report, refuses a report whose files do not all come from this config."""
    from nondet.workflow import reportcheck

    target = "results/tables/provenance.csv"
    if reportcheck.report_mode():
        stale = reportcheck.stale_report(config, target)
        if stale:
            raise WorkflowError(f"cannot build the report: {stale}")
    files = [f for f in rules.all.input if f != target]
    if not reportcheck.report_mode():
        from nondet.io.h5io import unwritable_folders

        bad = unwritable_folders([target, *files])
        if bad:
            raise WorkflowError(
                f"output folder(s) {', '.join(bad)} cannot be written: the tables and figures "
                "would fail only after every job before them ran; make them writable (or run in "
                "another --directory)"
            )
    return files


# --- k-model ensembles of the mitigation study's replicas (rules/ensembles.smk) ---
ENSEMBLES = "results/ensembles/{model}/{condition}.h5"


def ensemble_files():
    mit = config["mitigation"]
    return expand(ENSEMBLES, model=mit["models"], condition=mit["conditions"])


def ensemble_targets():
    if not config["mitigation"]["models"]:
        return []
    return ["results/tables/ensembles.csv", "results/figures/ensembles.png"]


def ensemble_table_expect(wildcards, input):
    out = metrics_expect(list(input.mitigation))
    for p in input.ensembles:  # results/ensembles/{model}/{condition}.h5
        parts = p.split("/")
        out[p] = expect.ensembles_expect(config, parts[2], parts[3][: -len(".h5")])
    return shown.expectations(out)


def diverged_summary():
    from nondet.workflow.reportcheck import diverged_jobs

    for line in diverged_jobs():
        print(f"WARNING: every replica diverged in {line}", file=sys.stderr)


# --- the report's own pages (rules/report.smk) ---
def report_page_targets():
    """Every table and figure of rule all but the provenance table (which lists these pages)."""
    return [
        "results/tables/diversity.csv",
        *figure_files(),
        *instability_targets(),
        *mitigation_targets(),
        *ensemble_targets(),
        *compare_targets(),
        *RUNS_TARGETS,
    ]
