"""What each Snakemake rule does, from input paths to output paths.

The scripts in workflow_scripts/ only unpack ``snakemake`` and call one function here, so the
logic is importable, testable and the same whether run by Snakemake or by hand.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from . import h5io
from .h5io import InputError, atomic_h5, open_input, provenance


def get_logger(log_path=None, name="nondet") -> logging.Logger:
    """Log lines to the rule's log file and to stderr (plain lines: safe without a terminal)."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    return logger


def stage(func):
    """Log any exception of a stage, with its traceback, to the rule's log file before raising."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        bound = inspect.signature(func).bind(*args, **kwargs)
        try:
            return func(*args, **kwargs)
        except Exception:
            get_logger(bound.arguments.get("log_path"), "nondet.errors").exception(
                f"{func.__name__} failed"
            )
            raise

    return wrapper


def job_provenance(kind: str, job: dict, device, **extra) -> dict:
    """Provenance of an output made by a training-type job (its whole spec, device, hashes)."""
    return provenance(
        kind=kind,
        job=job,
        device=str(device),
        experiment=job["experiment"],
        spec_hash=job["spec_hash"],
        data_hash=job["data_hash"],
        **extra,
    )


# --- data -------------------------------------------------------------------------------------


@stage
def make_dataset(out_path, spec: dict, data_hash: str, log_path=None) -> None:
    from .data import make_dataset_arrays

    log = get_logger(log_path)
    t0 = time.perf_counter()
    arrays = make_dataset_arrays(spec, log=log.info)
    prov = provenance(kind="dataset", dataset=spec, data_hash=data_hash)
    with atomic_h5(out_path, prov) as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    shapes = {k: v.shape for k, v in arrays.items()}
    log.info(f"wrote {out_path}: {shapes} in {time.perf_counter() - t0:.1f}s")


def load_dataset(path, expected_hash: str, device="cpu"):
    from .data import from_arrays

    with open_input(path, "dataset") as f:
        if str(f.attrs.get("data_hash")) != expected_hash:
            raise InputError(
                f"data set {path} was made from a different dataset config "
                f"(data_hash {f.attrs.get('data_hash')} != {expected_hash}); rerun its rule"
            )
        arrays = {k: f[k][()] for k in ("x_train", "y_train", "x_test", "y_test")}
        name = json.loads(f.attrs["provenance"])["dataset"]["name"]
    return from_arrays(name, arrays, device)


# --- training ---------------------------------------------------------------------------------


def _setup_torch(threads: int, device_name: str):
    import os

    # cuBLAS reads this when it creates its handle: set it before anything touches CUDA.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    from .training import resolve_device

    torch.set_num_threads(max(1, int(threads)))
    device = resolve_device(device_name)
    if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1:
        from .gpus import claim_gpu  # several local GPUs: take a free one, not always cuda:0

        device = torch.device("cuda", claim_gpu(torch.cuda.device_count()))
        torch.cuda.set_device(device)
    return device


@stage
def train(
    data_path, out_path, job: dict, log_path=None, threads: int = 1, checkpoint_every: int = 1
) -> None:
    """Train the replicas of ``job`` (see nondet.config.train_job) into one HDF5 file.

    Resumable: each replica checkpoints every ``checkpoint_every`` epochs (0 = never) into a
    hidden folder beside the output, and a job started again after a kill resumes from there.
    The folder is removed once the output is complete.
    """
    from .seeds import ReplicaSeeds, replica_seeds
    from .training import train_replica

    log = get_logger(log_path)
    device = _setup_torch(threads, job["device"])
    data = load_dataset(data_path, job["data_hash"], device)
    keys = ("model", "comparison", "arm", "factorial", "condition")
    label = "/".join(str(job[k]) for k in keys if job.get(k))
    log.info(
        f"training {label} replicas {job['replicas']} on {device} "
        f"({job['recipe']['epochs']} epochs, {len(data.y_train)} examples)"
    )
    if "seeds" in job:  # explicit seeds per replica (factorial designs)
        seeds_list = [ReplicaSeeds(**s) for s in job["seeds"]]
    else:
        seeds_list = [replica_seeds(job["condition"], r, job["base_seed"]) for r in job["replicas"]]
    ckpt_dir = checkpoint_dir(out_path)
    vectorize = job.get("vectorize", "off")
    if vectorize == "on" or (vectorize == "auto" and device.type == "cuda"):
        from .vectorized import train_replicas_vectorized

        log.info(f"training {len(seeds_list)} replicas together (torch.func.vmap); no checkpoints")
        outs = train_replicas_vectorized(
            job["model_spec"], job["recipe"], seeds_list, data, device, f"[{label}]", log.info
        )
    else:
        if checkpoint_every:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
        outs = []
        for r, seeds in zip(job["replicas"], seeds_list):
            res = train_replica(
                job["model_spec"], job["recipe"], seeds, data, device, f"[{label} r{r}]", log.info,
                checkpoint=ckpt_dir / f"replica_{r:04d}.pt" if checkpoint_every else None,
                checkpoint_every=checkpoint_every,
            )  # fmt: skip
            log.info(
                f"[{label} r{r}] done in {res['seconds']:.1f}s, final test_acc "
                f"{res['curve']['test_acc'][-1]:.2f}%" + (" DIVERGED" if res["diverged"] else "")
            )
            outs.append(res)
    results = list(zip(job["replicas"], seeds_list, outs))

    prov = job_provenance("train", job, device)
    with atomic_h5(out_path, prov) as f:
        for r, seeds, res in results:
            g = f.create_group(f"replica_{r:04d}")
            g.attrs["replica"] = r
            g.attrs["seeds"] = json.dumps(seeds.as_dict())
            g.attrs["deterministic"] = seeds.deterministic
            g.attrs["kernels_mode"] = res["kernels_mode"]
            g.attrs["bitflip"] = json.dumps(res["bitflip"])
            g.attrs["diverged"] = res["diverged"]
            g.attrs["seconds"] = res["seconds"]
            h5io.write_dict(g.create_group("weights"), res["state"])
            h5io.write_dict(g.create_group("curve"), res["curve"])
            for c, snap in enumerate(res["snapshots"]):
                h5io.write_dict(g.create_group(f"snapshots/{c}"), snap)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    log.info(f"wrote {out_path}")


def checkpoint_dir(out_path) -> Path:
    """Hidden folder beside a training output that holds its replicas' resumable state."""
    out_path = Path(out_path)
    return out_path.with_name(f".{out_path.name}.checkpoints")


def load_replicas(path) -> list[dict]:
    """Replicas of a training file: weights, curve and attributes."""
    out = []
    with open_input(path, "train") as f:
        job = json.loads(f.attrs["provenance"])["job"]
        for name in sorted(k for k in f if k.startswith("replica_")):
            g = f[name]
            out.append(
                {
                    "replica": int(g.attrs["replica"]),
                    "seeds": json.loads(g.attrs["seeds"]),
                    "kernels_mode": str(g.attrs["kernels_mode"]),
                    "diverged": bool(g.attrs["diverged"]),
                    "bitflip": json.loads(g.attrs["bitflip"]),
                    "weights": h5io.read_dict(g["weights"]),
                    "snapshots": [
                        h5io.read_dict(g["snapshots"][c])
                        for c in sorted(g.get("snapshots", {}), key=int)
                    ],
                    "curve": h5io.read_dict(g["curve"]),
                    "job": job,
                }
            )
    return out


def rebuild_model(model_spec: dict, weights: dict, data, device):
    """A model of ``model_spec`` holding ``weights`` (no random draw matters: all are replaced)."""
    import torch

    from .models import build_model
    from .seeds import torch_generator

    model = build_model(model_spec, data.input_shape, data.num_classes, torch_generator(0), device)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
    return model


@stage
def predict(
    data_path, train_path, out_path, job: dict, log_path=None, threads: int = 1, method="plain",
    tta=None,
) -> None:  # fmt: skip
    """Test-set logits and penultimate features of every replica in a training file.

    ``method``: ``plain`` (final weights), ``tta`` (logits averaged over the views of ``tta``),
    ``snapshot`` (logits averaged over the snapshots saved at each cycle's end) or
    ``snapshot+tta``. Features always come from the final weights and the identity view.
    """
    from .tta import make_views, predict_tta

    log = get_logger(log_path)
    device = _setup_torch(threads, job["device"])
    data = load_dataset(data_path, job["data_hash"], device)
    replicas = load_replicas(train_path)
    if replicas and replicas[0]["job"]["spec_hash"] != job["spec_hash"]:
        raise InputError(f"{train_path} was trained from a different job spec; rerun training")
    use_tta, use_snapshots = method in ("tta", "snapshot+tta"), method.startswith("snapshot")
    views = make_views(tta if use_tta else None)
    bf16 = bool(job["recipe"].get("bf16", False))
    logits, features, passes = [], [], 0
    for rep in replicas:
        z, h = predict_tta(rebuild_model(job["model_spec"], rep["weights"], data, device), data.x_test, views, bf16=bf16)
        passes = len(views)
        if use_snapshots:
            if not rep["snapshots"]:
                raise InputError(f"{train_path} has no snapshots (trained with cycles=1)")
            zs = [
                predict_tta(rebuild_model(job["model_spec"], w, data, device), data.x_test, views, bf16=bf16)[0]
                for w in rep["snapshots"]
            ]
            z, passes = sum(zs) / len(zs), len(views) * len(zs)
        logits.append(z.cpu().numpy())
        features.append(h.cpu().numpy())
    prov = job_provenance(
        "predict", job, device, method=method, views=[name for name, _ in views]
    )
    with atomic_h5(out_path, prov) as f:
        f.create_dataset("logits", data=np.stack(logits).astype(np.float32))
        f.create_dataset("features", data=np.stack(features).astype(np.float32))
        f.create_dataset("labels", data=data.y_test.cpu().numpy())
        f.create_dataset("replicas", data=[r["replica"] for r in replicas])
        f.create_dataset("diverged", data=[r["diverged"] for r in replicas])
        f.attrs["kernels_mode"] = replicas[0]["kernels_mode"] if replicas else ""
        f.attrs["method"] = method
        f.attrs["test_passes"] = passes
    log.info(
        f"predicted {len(replicas)} replicas of {job['model']}/{job['condition']} ({method}, "
        f"{passes} forward passes per example) -> {out_path}"
    )


# --- metrics, tables, figures -----------------------------------------------------------------


def load_predictions(paths) -> dict:
    h5io.check_same_experiment(paths, "data_hash")
    parts = []
    for p in paths:
        with open_input(p, "predict") as f:
            parts.append(
                {
                    "logits": f["logits"][()],
                    "features": f["features"][()],
                    "labels": f["labels"][()],
                    "replicas": f["replicas"][()],
                    "diverged": f["diverged"][()],
                    "kernels_mode": str(f.attrs["kernels_mode"]),
                    "method": str(f.attrs.get("method", "plain")),
                    "test_passes": int(f.attrs.get("test_passes", 1)),
                    "cka_on": str(f.attrs.get("cka_on", "")),  # set by imported runs (nondet.runs)
                    "prov": json.loads(f.attrs["provenance"]),
                }
            )
    labels = parts[0]["labels"]
    for p, part in zip(paths, parts):
        if part["labels"].shape != labels.shape or not np.array_equal(part["labels"], labels):
            raise InputError(f"{p} was predicted on a different test set")
    return {
        "logits": np.concatenate([p["logits"] for p in parts]),
        "features": np.concatenate([p["features"] for p in parts]),
        "labels": labels,
        "replicas": np.concatenate([p["replicas"] for p in parts]),
        "diverged": np.concatenate([p["diverged"] for p in parts]).astype(bool),
        "kernels_mode": parts[0]["kernels_mode"],
        "method": parts[0]["method"],
        "test_passes": parts[0]["test_passes"],
        "cka_on": parts[0]["cka_on"],
        "job": parts[0]["prov"]["job"],
        "device": parts[0]["prov"]["device"],
    }


@stage
def metrics(predict_paths, out_path, params: dict, log_path=None) -> None:
    """The diversity metrics of one (model, condition) from its prediction files."""
    from .metrics import summarize

    log = get_logger(log_path)
    t0 = time.perf_counter()
    pred = load_predictions(predict_paths)
    group = f"{params['model']}/{params['condition']}"
    diverged = pred["diverged"]
    if diverged.any():
        names = ", ".join(str(r) for r in pred["replicas"][diverged])
        if params.get("on_diverged", "exclude") == "fail":
            raise InputError(
                f"{group}: {diverged.sum()} replica(s) diverged (loss NaN/inf): {names}; "
                "set metrics.on_diverged: exclude to drop them from the aggregates"
            )
        log.warning(f"{group}: EXCLUDING {diverged.sum()} diverged replica(s) from aggregates: {names}")
    keep = ~diverged
    if keep.sum() < 2:
        raise InputError(
            f"{group}: pairwise metrics need >= 2 replicas that did not diverge, have {keep.sum()}"
        )
    row, arrays = summarize(
        pred["logits"][keep],
        pred["labels"],
        pred["features"][keep],
        params["bootstrap_resamples"],
        params["seed"],
    )
    job = pred["job"]
    row = {
        "model": params["model"],
        "condition": params["condition"],
        "device": pred["device"],
        "kernels_mode": pred["kernels_mode"],
        "epochs": job["recipe"]["epochs"],
        "cycles": job["recipe"]["cycles"],
        "method": pred["method"],
        "test_passes": pred["test_passes"],
        **row,
        "n_diverged": int(diverged.sum()),
        **({"cka_on": pred["cka_on"]} if pred["cka_on"] else {}),  # imported runs: logits or features
    }
    prov = provenance(
        kind="metrics",
        params=params,
        experiment=job["experiment"],
        data_hash=job["data_hash"],
        spec_hash=job["spec_hash"],
    )
    with atomic_h5(out_path, prov) as f:
        f.attrs["row"] = json.dumps(row)
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        f.create_dataset("replicas", data=pred["replicas"][keep])
        f.create_dataset("diverged_replicas", data=pred["replicas"][diverged])
    log.info(
        f"{row['model']}/{row['condition']}: acc {row['acc_mean']:.2f}±{row['acc_sd']:.2f}% "
        f"disagreement {row['disagreement']:.2f}% ({time.perf_counter() - t0:.1f}s)"
    )


def load_rows(metric_paths) -> list[dict]:
    rows = []
    for p in metric_paths:
        with open_input(p, "metrics") as f:
            rows.append(json.loads(f.attrs["row"]))
    return rows


@stage
def table(metric_paths, csv_path, md_path, log_path=None) -> None:
    from .tables import diversity_table, write_table

    log = get_logger(log_path)
    h5io.check_same_experiment(metric_paths, "data_hash")
    df = diversity_table(load_rows(metric_paths))
    write_table(df, csv_path, md_path)
    log.info(f"wrote {csv_path} and {md_path} ({len(df)} rows)")


@stage
def plot(metric_paths, pdf_path, png_path, model: str, log_path=None) -> None:
    from .plots import diversity_figure

    log = get_logger(log_path)
    rows = [r for r in load_rows(metric_paths) if r["model"] == model]
    diversity_figure(rows, model, pdf_path, png_path)
    log.info(f"wrote {pdf_path} and {png_path}")


@stage
def provenance_table(config: dict, csv_path, log_path=None) -> None:
    """Provenance of the run (versions, code version, config hash) for the report."""
    import pandas as pd

    prov = provenance(config_hash=h5io.spec_hash(config), experiment=config["experiment"])
    versions = prov.pop("versions")
    rows = [(k, json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in prov.items()]
    rows += [(f"version:{k}", v) for k, v in versions.items()]
    rows.append(("config", json.dumps(config, sort_keys=True)))
    with h5io.atomic_path(csv_path) as tmp:
        pd.DataFrame(rows, columns=["key", "value"]).to_csv(tmp, index=False)
    get_logger(log_path).info(f"wrote {csv_path}")


# --- instability and mitigation ---------------------------------------------------------------


@stage
def twins(data_path, out_path, job: dict, log_path=None, threads: int = 1) -> None:
    """Train the base run and its twins, recording parameter distance and test disagreement."""
    import math

    from .instability import disagreement, log_steps, relative_distance, twin_runs
    from .seeds import replica_seeds
    from .training import train_replica

    log = get_logger(log_path)
    device = _setup_torch(threads, job["device"])
    data = load_dataset(data_path, job["data_hash"], device)
    recipe = job["recipe"]
    total = math.ceil(len(data.y_train) / recipe["batch_size"]) * recipe["epochs"]
    steps = log_steps(total, job["record_points"])
    runs = {}
    for name, condition, replica in twin_runs(job["twins"]):
        seeds = replica_seeds(condition, replica, job["base_seed"])
        res = train_replica(
            job["model_spec"], recipe, seeds, data, device, f"[{job['model']} {name}]",
            log.info, record_steps=steps,
        )  # fmt: skip
        runs[name] = (condition, seeds, res)
    base = runs["base"][2]["records"]
    prov = job_provenance("divergence", job, device)
    with atomic_h5(out_path, prov) as f:
        f.create_dataset("steps", data=base["steps"])
        f.attrs["steps_per_epoch"] = total // recipe["epochs"]
        for name, (condition, seeds, res) in runs.items():
            g = f.create_group(name)
            g.attrs["condition"] = condition
            g.attrs["seeds"] = json.dumps(seeds.as_dict())
            g.attrs["bitflip"] = json.dumps(res["bitflip"])
            rec = res["records"]
            g.create_dataset("distance", data=relative_distance(base["params"], rec["params"]))
            g.create_dataset(
                "disagreement", data=disagreement(base["test_logits"], rec["test_logits"])
            )
            g.create_dataset("test_acc", data=res["curve"]["test_acc"])
            if name != "base":
                d = g["distance"][()]
                log.info(
                    f"{name}: distance {d[0]:.3g} at step 0 -> {d[-1]:.3g} at step {steps[-1]}, "
                    f"final disagreement {g['disagreement'][-1]:.2f}%"
                )
    log.info(f"wrote {out_path}")


def load_divergence(path) -> dict:
    with open_input(path, "divergence") as f:
        out = {"steps": f["steps"][()], "model": json.loads(f.attrs["provenance"])["job"]["model"]}
        out["steps_per_epoch"] = int(f.attrs["steps_per_epoch"])
        out["runs"] = {
            name: {
                "condition": str(f[name].attrs["condition"]),
                "distance": f[name]["distance"][()],
                "disagreement": f[name]["disagreement"][()],
            }
            for name in f
            if name != "steps"
        }
    return out


@stage
def plot_divergence(divergence_path, pdf_path, png_path, log_path=None) -> None:
    from .plots import divergence_figure

    divergence_figure(load_divergence(divergence_path), pdf_path, png_path)
    get_logger(log_path).info(f"wrote {pdf_path} and {png_path}")


@stage
def mitigation_table(metric_paths, csv_path, md_path, pdf_path, png_path, log_path=None):
    """Plain vs TTA vs snapshot ensemble vs both, per (model, condition), with reductions."""
    from .plots import mitigation_figure
    from .tables import mitigation_table as make_table
    from .tables import write_table

    h5io.check_same_experiment(metric_paths, "data_hash")
    df = make_table(load_rows(metric_paths))
    write_table(df, csv_path, md_path)
    mitigation_figure(df, pdf_path, png_path)
    get_logger(log_path).info(f"wrote {csv_path}, {md_path} and figures ({len(df)} rows)")


@stage
def stability_table(metric_paths, csv_path, md_path, pdf_path, png_path, log_path=None):
    """Init and one-ulp diversity by model family: table and figure."""
    from .plots import stability_figure
    from .tables import diversity_table, write_table

    df = diversity_table(load_rows(metric_paths))
    write_table(df, csv_path, md_path)
    stability_figure(df, pdf_path, png_path)
    get_logger(log_path).info(f"wrote {csv_path}, {md_path} and figures ({len(df)} rows)")


# --- is my improvement real? ------------------------------------------------------------------


@stage
def compare(baseline_paths, candidate_paths, csv_path, pdf_path, png_path, params: dict,
            log_path=None) -> None:  # fmt: skip
    """Candidate vs baseline on accuracy and cross-entropy, against run-to-run noise."""
    import math

    import pandas as pd

    from .compare import compare_arms, per_example_split, per_example_values
    from .metrics import accuracy, cross_entropy
    from .plots import comparison_figure

    log = get_logger(log_path)
    h5io.check_same_experiment(list(baseline_paths) + list(candidate_paths), "data_hash")
    arms = {"baseline": load_predictions(baseline_paths), "candidate": load_predictions(candidate_paths)}
    values, per_example = {}, {}
    for arm, pred in arms.items():
        keep = ~pred["diverged"]
        if (~keep).any():
            log.warning(f"{arm}: excluding {(~keep).sum()} diverged replica(s)")
        per_example[arm] = per_example_values(pred["logits"][keep], pred["labels"])
        values[arm] = {  # exactly as in the diversity table (ties matter to permutation tests)
            "accuracy": accuracy(pred["logits"][keep], pred["labels"]),
            "cross_entropy": cross_entropy(pred["logits"][keep], pred["labels"]),
        }
    rows = []
    for metric in ("accuracy", "cross_entropy"):
        effect = params["effect"] if metric == "accuracy" else None
        res = compare_arms(values["baseline"][metric], values["candidate"][metric], params["alpha"],
                           params["power"], effect, params["bootstrap_resamples"], params["seed"])  # fmt: skip
        # how much of each arm's run-to-run SD independent per-example flips explain (test set)
        test_set = {f"{arm}_sd_test_set": math.sqrt(max(0.0, per_example_split(per_example[arm][metric])["examples"]))
                    for arm in ("baseline", "candidate")}  # fmt: skip
        rows.append({"comparison": params["name"], "metric": metric, **res, **test_set})
        log.info(
            f"{params['name']} {metric}: candidate - baseline = {res['diff']:+.4g} "
            f"[{res['ci_low']:+.4g}, {res['ci_high']:+.4g}], Welch p={res['welch_p']:.3g}, "
            f"permutation p={res['permutation_p']:.3g}, {res['effect_in_sd']:+.2f} SD; "
            f"replicas per arm to detect {res['detect_diff']:+.3g}: {res['replicas_needed']}"
        )
    df = pd.DataFrame(rows)
    with h5io.atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False)
    comparison_figure(values, df, params["name"], pdf_path, png_path)


@stage
def factorial(predict_paths, csv_path, pdf_path, png_path, params: dict, log_path=None) -> None:
    """Variance components of accuracy and cross-entropy over a factorial design of seeds."""
    import pandas as pd

    from .compare import per_example_split, per_example_values, variance_components
    from .metrics import accuracy, cross_entropy
    from .plots import components_figure

    log = get_logger(log_path)
    pred = load_predictions(predict_paths)
    if pred["diverged"].any():
        raise InputError(f"{params['name']}: diverged runs leave holes in the factorial design")
    cells = [tuple(c) for c in params["cells"]]
    shape = tuple(params["levels"])
    per_example = per_example_values(pred["logits"], pred["labels"])  # finite-test-set reference
    rows = []
    for metric, fn in (("accuracy", accuracy), ("cross_entropy", cross_entropy)):
        y = np.full(shape, np.nan)
        for r, v in zip(pred["replicas"], fn(pred["logits"], pred["labels"])):
            y[cells[int(r)]] = v
        if np.isnan(y).any():
            raise InputError(f"{params['name']}: some cells of the design have no prediction")
        for row in variance_components(y, params["sources"], params["bootstrap_resamples"], params["seed"]):
            rows.append({"design": params["name"], "metric": metric, **row})
        # references, not components: the variance over cells, and its finite-test-set part
        split = per_example_split(per_example[metric])
        for effect, value in (("total", split["total"]), ("test_set", split["examples"])):
            rows.append({"design": params["name"], "metric": metric, "effect": effect,
                         "df": len(cells) - 1, "component": value})  # fmt: skip
        log.info(
            f"{params['name']} {metric}: variance over cells {split['total']:.4g}, of which "
            f"{split['examples']:.4g} expected from the finite test set"
        )
    df = pd.DataFrame(rows)
    with h5io.atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False)
    components_figure(df, params["name"], pdf_path, png_path)
