# Helpers only: validate the config and compute paths and params with the nondet package.
from nondet import config as cfg
from nondet.h5io import CODE_VERSION

try:
    _validated = cfg.validate(config)
except cfg.ConfigError as e:
    raise WorkflowError(str(e)) from None
config.clear()
config.update(_validated)

GROUPS = cfg.groups(config)
CHUNKS = range(len(cfg.chunks(config)))
MODELS = list(config["models"])
DATA = f"results/data/{config['dataset']['name']}.h5"


wildcard_constraints:
    model="|".join(MODELS),
    condition="|".join(sorted({c for _, c in GROUPS})),
    chunk=r"\d+",


def predict_files(model, condition):
    return expand(
        "results/predict/{model}/{condition}/chunk{chunk}.h5",
        model=model,
        condition=condition,
        chunk=CHUNKS,
    )


def metric_files(model=None):
    return [
        f"results/metrics/{m}/{c}.h5" for m, c in GROUPS if model is None or m == model
    ]


def figure_files():
    return expand(
        "results/figures/diversity_{model}.{ext}", model=MODELS, ext=("pdf", "png")
    )


def train_job(wildcards):
    return cfg.train_job(
        config, wildcards.model, wildcards.condition, int(wildcards.chunk)
    )


def metrics_params(wildcards):
    return {
        "model": wildcards.model,
        "condition": wildcards.condition,
        **config["metrics"],
        "code_version": CODE_VERSION,
    }
