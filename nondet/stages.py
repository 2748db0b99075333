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


def get_logger(log_path=None, name="nondet", mode="w") -> logging.Logger:
    """Log lines to the rule's log file and to stderr (plain lines: safe without a terminal)."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    for h in logger.handlers:
        h.close()
    logger.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode=mode))
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    return logger


def _logs_to(logger: logging.Logger, log_path) -> bool:
    """Whether ``logger`` already writes to ``log_path`` (None: to stderr only)."""
    files = [h.baseFilename for h in logger.handlers if isinstance(h, logging.FileHandler)]
    if not log_path:
        return bool(logger.handlers) and not files
    return str(Path(log_path).resolve()) in {str(Path(f).resolve()) for f in files}


def stage(func):
    """Log any exception of a stage, with its traceback, to the rule's log file before raising:
    once, appended after what the stage logged (never truncating the log)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        bound = inspect.signature(func).bind(*args, **kwargs)
        try:
            return func(*args, **kwargs)
        except Exception:
            log_path = bound.arguments.get("log_path")
            logger = logging.getLogger("nondet")
            if not _logs_to(logger, log_path):
                logger = get_logger(log_path, mode="a")
            logger.exception(f"{func.__name__} failed")
            raise

    return wrapper


def _expectations(paths, expect) -> list:
    """``expect`` (None, a list aligned with ``paths``, or a dict keyed by path) as a list."""
    if expect is None:
        return [None] * len(paths)
    if isinstance(expect, dict):
        return [expect.get(str(p)) for p in paths]
    if len(expect) != len(paths):
        raise InputError(f"{len(paths)} input files but {len(expect)} expected job specs")
    return list(expect)


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


@stage
def check_model(data_path, out_path, model: str, spec: dict, conditions, bitflip_tensor,
                data_hash: str, log_path=None) -> None:  # fmt: skip
    """Import, build and run a user's model on two examples of the data set (nondet.usermodel)."""
    from .usermodel import check_model as check

    log = get_logger(log_path)
    data = load_dataset(data_path, data_hash)
    summary = check(spec, data.input_shape, data.num_classes, model, conditions, bitflip_tensor)
    summary.update(input_shape=list(data.input_shape), num_classes=data.num_classes)
    with h5io.atomic_path(out_path) as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=1) + "\n")
    log.info(f"model {model} passed its checks: {json.dumps(summary)}")
    if summary["other_stochastic_layers"]:
        log.warning(
            f"model {model}: {', '.join(summary['other_stochastic_layers'])} draw from the global "
            "RNG, seeded per training step from the dropout seed (not per example)"
        )


def cka_on(model_spec: dict) -> str:
    """What the CKA column compares: penultimate features, or the logits (a linear model, or a
    user model without a ``features`` module)."""
    if ":" in model_spec["arch"]:
        return "features" if model_spec.get("features") else "logits"
    return "logits" if model_spec["arch"] == "linear" else "features"


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
    # One-ulp flips can be absorbed by rounding: train the unperturbed run with the same seeds in
    # this job (same process, machine and kernels) and compare final weights bitwise.
    reference = unperturbed_reference(seeds_list)
    runs = list(zip(job["replicas"], seeds_list))
    if reference is not None:
        log.info(f"[{label}] also training the unperturbed reference run (absorbed-flip check)")
        runs.append(("reference", reference))
    vectorize = job.get("vectorize", "off")
    vectorize = vectorize == "on" or (vectorize == "auto" and device.type == "cuda")
    if vectorize and not all(s.deterministic for s in seeds_list):
        # replicas of one vmap share each kernel call: on CUDA their kernel nondeterminism could
        # vanish inside a chunk and appear only between chunks
        log.info(f"[{label}] not vectorised: this condition varies the kernels source")
        vectorize = False
    if checkpoint_every:
        checkpoints_for(ckpt_dir, job, log.info)
    if vectorize:
        from .vectorized import train_replicas_vectorized

        log.info(f"training {len(runs)} runs together (torch.func.vmap)")
        outs = train_replicas_vectorized(
            job["model_spec"], job["recipe"], [s for _, s in runs], data, device, f"[{label}]",
            log.info, checkpoint=ckpt_dir / "vectorized.pt" if checkpoint_every else None,
            checkpoint_every=checkpoint_every,
        )  # fmt: skip
    else:
        outs = []
        for r, seeds in runs:
            name = f"replica_{r:04d}" if r != "reference" else "reference"
            res = train_replica(
                job["model_spec"], job["recipe"], seeds, data, device, f"[{label} r{r}]", log.info,
                checkpoint=ckpt_dir / f"{name}.pt" if checkpoint_every else None,
                checkpoint_every=checkpoint_every,
            )  # fmt: skip
            log.info(
                f"[{label} r{r}] done in {res['seconds']:.1f}s, final test_acc "
                f"{res['curve']['test_acc'][-1]:.2f}%" + (" DIVERGED" if res["diverged"] else "")
            )
            outs.append(res)
    absorbed = [None] * len(seeds_list)
    if reference is not None:
        ref_state = outs.pop()["state"]
        absorbed = [same_weights(res["state"], ref_state) for res in outs]
        log.info(
            f"[{label}] {sum(absorbed)} of {len(absorbed)} one-ulp flips absorbed (final weights "
            "bitwise equal to the unperturbed run)"
        )
    results = list(zip(job["replicas"], seeds_list, outs, absorbed))

    prov = job_provenance("train", job, device)
    with atomic_h5(out_path, prov) as f:
        for r, seeds, res, absorbed_flip in results:
            g = f.create_group(f"replica_{r:04d}")
            g.attrs["replica"] = r
            g.attrs["seeds"] = json.dumps(seeds.as_dict())
            g.attrs["deterministic"] = seeds.deterministic
            g.attrs["kernels_mode"] = res["kernels_mode"]
            g.attrs["bitflip"] = json.dumps(res["bitflip"])
            g.attrs["absorbed"] = -1 if absorbed_flip is None else int(absorbed_flip)
            g.attrs["diverged"] = res["diverged"]
            g.attrs["seconds"] = res["seconds"]
            h5io.write_dict(g.create_group("weights"), res["state"])
            h5io.write_dict(g.create_group("curve"), res["curve"])
            for c, snap in enumerate(res["snapshots"]):
                h5io.write_dict(g.create_group(f"snapshots/{c}"), snap)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    log.info(f"wrote {out_path}")


def unperturbed_reference(seeds_list):
    """Seeds of the run a job's one-ulp flips perturb (the same seeds without the flip), when
    every flipped replica of the job shares it (``bitflip``: control's seeds); else None."""
    import dataclasses

    if not seeds_list or any(s.bitflip is None for s in seeds_list):
        return None
    refs = {dataclasses.replace(s, bitflip=None) for s in seeds_list}
    return refs.pop() if len(refs) == 1 else None


def same_weights(a: dict, b: dict) -> bool:
    """Bitwise equality of two state dicts of arrays (parameters and buffers)."""
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def checkpoints_for(ckpt_dir: Path, job: dict, log=print) -> None:
    """Make ``ckpt_dir`` hold only checkpoints of ``job``: checkpoints left by any other job spec
    (other data, code version, settings or experiment name) are deleted, saying why."""
    key = {"spec_hash": job["spec_hash"], "data_hash": job["data_hash"],
           "code_version": h5io.CODE_VERSION}  # fmt: skip
    key_file = ckpt_dir / "job.json"
    if ckpt_dir.exists():
        try:
            old = json.loads(key_file.read_text())
        except (OSError, ValueError):
            old = None
        if old != key:
            why = "they carry no job key" if not isinstance(old, dict) else "; ".join(
                f"{k} {old.get(k)} != {v}" for k, v in key.items() if old.get(k) != v
            )
            log(f"ignoring the checkpoints in {ckpt_dir}: another job spec wrote them ({why}); "
                "training from the start")  # fmt: skip
            shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    key_file.write_text(json.dumps(key))


def checkpoint_dir(out_path) -> Path:
    """Hidden folder beside a training output that holds its replicas' resumable state."""
    out_path = Path(out_path)
    return out_path.with_name(f".{out_path.name}.checkpoints")


def load_replicas(path, expect: dict | None = None) -> list[dict]:
    """Replicas of a training file: weights, curve and attributes."""
    out = []
    with open_input(path, "train", expect) as f:
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
                    "absorbed": int(g.attrs.get("absorbed", -1)),
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
    from . import training
    from .tta import check_fits, fit_kind, make_views, predict_tta

    log = get_logger(log_path)
    device = _setup_torch(threads, job["device"])
    # test logits of every condition with deterministic fp32 kernels (no TF32 convolutions on
    # CUDA): the kernels condition varies training, never the evaluation
    training.set_kernel_mode(True, device)
    data = load_dataset(data_path, job["data_hash"], device)
    replicas = load_replicas(train_path, _job_expect(job))
    if replicas and replicas[0]["job"]["spec_hash"] != job["spec_hash"]:
        raise InputError(f"{train_path} was trained from a different job spec; rerun training")
    use_tta, use_snapshots = method in ("tta", "snapshot+tta"), method.startswith("snapshot")
    tta = fit_kind(tta if use_tta else None, data.x_test)
    check_fits(tta, data.x_test)
    views = make_views(tta)
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
        "predict", job, device, method=method, views=[name for name, _ in views],
        tta=tta if use_tta else None,
    )  # fmt: skip
    with atomic_h5(out_path, prov) as f:
        f.create_dataset("logits", data=np.stack(logits).astype(np.float32))
        f.create_dataset("features", data=np.stack(features).astype(np.float32))
        f.create_dataset("labels", data=data.y_test.cpu().numpy())
        f.create_dataset("replicas", data=[r["replica"] for r in replicas])
        f.create_dataset("diverged", data=[r["diverged"] for r in replicas])
        # 1: the one-ulp flip was absorbed, 0: it survived, -1: no flip or not checked
        f.create_dataset("absorbed", data=np.array([r["absorbed"] for r in replicas], dtype=np.int8))
        f.attrs["kernels_mode"] = replicas[0]["kernels_mode"] if replicas else ""
        f.attrs["method"] = method
        f.attrs["test_passes"] = passes
    log.info(
        f"predicted {len(replicas)} replicas of {job['model']}/{job['condition']} ({method}, "
        f"{passes} forward passes per example) -> {out_path}"
    )


# --- metrics, tables, figures -----------------------------------------------------------------


def _job_expect(job: dict) -> dict:
    return {k: job[k] for k in ("spec_hash", "data_hash", "code_version")}


def load_predictions(paths, expect=None) -> dict:
    """Prediction files, concatenated; ``expect``: what each must carry (see _expectations)."""
    h5io.check_same_experiment(paths, "data_hash")
    parts = []
    for p, e in zip(paths, _expectations(paths, expect)):
        with open_input(p, "predict", e) as f:
            parts.append(
                {
                    "logits": f["logits"][()],
                    "features": f["features"][()],
                    "labels": f["labels"][()],
                    "replicas": f["replicas"][()],
                    "diverged": f["diverged"][()],
                    "absorbed": f["absorbed"][()] if "absorbed" in f else np.full(len(f["replicas"]), -1),
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
        "absorbed": np.concatenate([p["absorbed"] for p in parts]).astype(np.int8),
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
    pred = load_predictions(predict_paths, params.get("inputs"))
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
        # features, or logits where the model has none (imported runs: set below)
        "cka_on": cka_on(job["model_spec"]) if "model_spec" in job else "",
        "test_passes": pred["test_passes"],
        **row,
        "n_diverged": int(diverged.sum()),
        "n_absorbed": absorbed_count(pred["absorbed"][keep]),
        "n_identical_pairs": identical_pairs(pred["logits"][keep]),
        **({"cka_on": pred["cka_on"]} if pred["cka_on"] else {}),  # imported runs: logits or features
    }
    prov = provenance(
        kind="metrics",
        params=params,
        experiment=job["experiment"],
        data_hash=job["data_hash"],
        spec_hash=h5io.spec_hash(params),  # params name the spec of every input
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
    pairs = row["n_replicas"] * (row["n_replicas"] - 1) // 2
    if (params["condition"] == "control") != (row["n_identical_pairs"] == pairs):
        log.warning(
            f"{group}: {row['n_identical_pairs']} of {pairs} pairs of replicas have bitwise "
            "identical test logits" + (" (control should be all)" if params["condition"] == "control" else "")
        )
    if row["n_absorbed"] > 0:
        log.warning(
            f"{group}: {row['n_absorbed']:.0f} of {row['n_replicas']} one-ulp flips were absorbed "
            "(final weights bitwise equal to the unperturbed run): they add no diversity"
        )


def identical_pairs(logits: np.ndarray) -> int:
    """Pairs of replicas whose test logits are bitwise identical: all of them in ``control``,
    none in a condition whose source really varied (a kernels source that produced no
    nondeterminism on this device, or flips all absorbed, would show here)."""
    import hashlib

    digests = [hashlib.sha256(np.ascontiguousarray(z).tobytes()).hexdigest() for z in logits]
    counts = {}
    for d in digests:
        counts[d] = counts.get(d, 0) + 1
    return int(sum(c * (c - 1) // 2 for c in counts.values()))


def absorbed_count(absorbed: np.ndarray) -> float:
    """How many flipped replicas absorbed their flip; NaN when there was no flip to check."""
    absorbed = np.asarray(absorbed)
    if absorbed.size == 0 or (absorbed < 0).any():
        return float("nan")
    return float(absorbed.sum())


def load_rows(metric_paths, expect=None) -> list[dict]:
    rows = []
    for p, e in zip(metric_paths, _expectations(metric_paths, expect)):
        with open_input(p, "metrics", e) as f:
            rows.append(json.loads(f.attrs["row"]))
    return rows


@stage
def table(metric_paths, csv_path, md_path, log_path=None, expect=None) -> None:
    from .tables import table_notes, diversity_table, write_table

    log = get_logger(log_path)
    h5io.check_same_experiment(metric_paths, "data_hash")
    df = diversity_table(load_rows(metric_paths, expect))
    notes = table_notes(df)
    write_table(df, csv_path, md_path, notes=notes)
    for line in notes:
        log.info(line)
    log.info(f"wrote {csv_path} and {md_path} ({len(df)} rows)")


@stage
def plot(metric_paths, pdf_path, png_path, model: str, log_path=None, expect=None) -> None:
    from .plots import diversity_figure

    log = get_logger(log_path)
    rows = [r for r in load_rows(metric_paths, expect) if r["model"] == model]
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
                g.attrs["absorbed"] = same_weights(res["state"], runs["base"][2]["state"])
                g.attrs["zero_from_step"] = zero_from_step(base["steps"], d)
                log.info(
                    f"{name}: distance {d[0]:.3g} at step 0 -> {d[-1]:.3g} at step {steps[-1]}, "
                    f"final disagreement {g['disagreement'][-1]:.2f}%"
                    + (f"; ABSORBED: bitwise equal to the base run from step "
                       f"{g.attrs['zero_from_step']}" if g.attrs["zero_from_step"] >= 0 else "")
                )  # fmt: skip
    log.info(f"wrote {out_path}")


def zero_from_step(steps, distance) -> int:
    """First recorded step from which a twin stays bitwise equal to its base run (distance
    exactly 0 at every later record), or -1 if it never returns to the base run."""
    distance = np.asarray(distance)
    if len(distance) == 0 or distance[-1] != 0:
        return -1
    nonzero = np.flatnonzero(distance != 0)
    return int(steps[nonzero[-1] + 1]) if len(nonzero) else int(steps[0])


def load_divergence(path, expect: dict | None = None) -> dict:
    with open_input(path, "divergence", expect) as f:
        out = {"steps": f["steps"][()], "model": json.loads(f.attrs["provenance"])["job"]["model"]}
        out["steps_per_epoch"] = int(f.attrs["steps_per_epoch"])
        out["runs"] = {
            name: {
                "condition": str(f[name].attrs["condition"]),
                "distance": f[name]["distance"][()],
                "disagreement": f[name]["disagreement"][()],
                "zero_from_step": int(f[name].attrs.get("zero_from_step", -1)),
            }
            for name in f
            if name != "steps"
        }
    return out


@stage
def plot_divergence(divergence_path, pdf_path, png_path, log_path=None, expect=None) -> None:
    from .plots import divergence_figure

    divergence_figure(load_divergence(divergence_path, expect), pdf_path, png_path)
    get_logger(log_path).info(f"wrote {pdf_path} and {png_path}")


@stage
def mitigation_table(metric_paths, csv_path, md_path, pdf_path, png_path, log_path=None,
                     expect=None):  # fmt: skip
    """Plain vs TTA vs snapshot ensemble vs both, per (model, condition), with reductions."""
    from .plots import mitigation_figure
    from .tables import mitigation_table as make_table
    from .tables import write_table

    h5io.check_same_experiment(metric_paths, "data_hash")
    df = make_table(load_rows(metric_paths, expect))
    write_table(df, csv_path, md_path)
    mitigation_figure(df, pdf_path, png_path)
    get_logger(log_path).info(f"wrote {csv_path}, {md_path} and figures ({len(df)} rows)")


@stage
def stability_table(metric_paths, csv_path, md_path, pdf_path, png_path, log_path=None,
                    expect=None):  # fmt: skip
    """Init and one-ulp diversity by model family: table and figure."""
    from .plots import stability_figure
    from .tables import table_notes, diversity_table, write_table

    df = diversity_table(load_rows(metric_paths, expect))
    write_table(df, csv_path, md_path, notes=table_notes(df))
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
    inputs = params.get("inputs", {})
    arms = {"baseline": load_predictions(baseline_paths, inputs.get("baseline")),
            "candidate": load_predictions(candidate_paths, inputs.get("candidate"))}  # fmt: skip
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
        # each arm's run-to-run SD if its examples flipped independently (shrinks as 1/sqrt(n))
        indep = {f"{arm}_sd_indep": math.sqrt(max(0.0, per_example_split(per_example[arm][metric])["indep"]))
                 for arm in ("baseline", "candidate")}  # fmt: skip
        rows.append({"comparison": params["name"], "metric": metric, **res, **indep})
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
    pred = load_predictions(predict_paths, params.get("inputs"))
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
        # references, not components: the variance over cells, and what independent
        # per-example flips would give (the part that vanishes with an infinite test set)
        split = per_example_split(per_example[metric])
        for effect, value in (("total", split["total"]), ("indep", split["indep"])):
            rows.append({"design": params["name"], "metric": metric, "effect": effect,
                         "df": len(cells) - 1, "component": value})  # fmt: skip
        log.info(
            f"{params['name']} {metric}: variance over cells {split['total']:.4g}, of which "
            f"{split['indep']:.4g} what independent per-example flips would give"
        )
    df = pd.DataFrame(rows)
    with h5io.atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False)
    components_figure(df, params["name"], pdf_path, png_path)
