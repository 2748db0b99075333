"""What each Snakemake rule does, from input paths to output paths.

The scripts in workflow_scripts/ only unpack ``snakemake`` and call one function here, so the
logic is importable, testable and the same whether run by Snakemake or by hand.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
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


# --- data -------------------------------------------------------------------------------------


@stage
def make_dataset(out_path, spec: dict, data_hash: str, log_path=None) -> None:
    from .data import make_dataset_arrays

    log = get_logger(log_path)
    t0 = time.perf_counter()
    arrays = make_dataset_arrays(spec)
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
    import torch

    from .training import resolve_device

    torch.set_num_threads(max(1, int(threads)))
    return resolve_device(device_name)


@stage
def train(data_path, out_path, job: dict, log_path=None, threads: int = 1) -> None:
    """Train the replicas of ``job`` (see nondet.config.train_job) into one HDF5 file."""
    from .seeds import replica_seeds
    from .training import train_replica

    log = get_logger(log_path)
    device = _setup_torch(threads, job["device"])
    data = load_dataset(data_path, job["data_hash"], device)
    label = f"{job['model']}/{job['condition']}"
    log.info(
        f"training {label} replicas {job['replicas']} on {device} "
        f"({job['recipe']['epochs']} epochs, {len(data.y_train)} examples)"
    )
    results = []
    for r in job["replicas"]:
        seeds = replica_seeds(job["condition"], r, job["base_seed"])
        res = train_replica(
            job["model_spec"], job["recipe"], seeds, data, device, f"[{label} r{r}]", log.info
        )
        log.info(
            f"[{label} r{r}] done in {res['seconds']:.1f}s, final test_acc "
            f"{res['curve']['test_acc'][-1]:.2f}%" + (" DIVERGED" if res["diverged"] else "")
        )
        results.append((r, seeds, res))

    prov = provenance(
        kind="train",
        job=job,
        device=str(device),
        experiment=job["experiment"],
        spec_hash=job["spec_hash"],
        data_hash=job["data_hash"],
    )
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
    log.info(f"wrote {out_path}")


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
def predict(data_path, train_path, out_path, job: dict, log_path=None, threads: int = 1) -> None:
    """Test-set logits and penultimate features of every replica in a training file."""
    from .predict import predict as predict_logits

    log = get_logger(log_path)
    device = _setup_torch(threads, job["device"])
    data = load_dataset(data_path, job["data_hash"], device)
    replicas = load_replicas(train_path)
    if replicas and replicas[0]["job"]["spec_hash"] != job["spec_hash"]:
        raise InputError(f"{train_path} was trained from a different job spec; rerun training")
    logits, features = [], []
    for rep in replicas:
        model = rebuild_model(job["model_spec"], rep["weights"], data, device)
        z, h = predict_logits(model, data.x_test)
        logits.append(z.cpu().numpy())
        features.append(h.cpu().numpy())
    prov = provenance(
        kind="predict",
        job=job,
        device=str(device),
        experiment=job["experiment"],
        spec_hash=job["spec_hash"],
        data_hash=job["data_hash"],
    )
    with atomic_h5(out_path, prov) as f:
        f.create_dataset("logits", data=np.stack(logits).astype(np.float32))
        f.create_dataset("features", data=np.stack(features).astype(np.float32))
        f.create_dataset("labels", data=data.y_test.cpu().numpy())
        f.create_dataset("replicas", data=[r["replica"] for r in replicas])
        f.create_dataset("diverged", data=[r["diverged"] for r in replicas])
        f.attrs["kernels_mode"] = replicas[0]["kernels_mode"] if replicas else ""
    log.info(f"predicted {len(replicas)} replicas of {job['model']}/{job['condition']} -> {out_path}")


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
    if len(pred["logits"]) < 2:
        raise InputError(f"{params['model']}/{params['condition']}: pairwise metrics need >= 2 replicas")
    row, arrays = summarize(
        pred["logits"],
        pred["labels"],
        pred["features"],
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
        **row,
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
        f.create_dataset("replicas", data=pred["replicas"])
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
