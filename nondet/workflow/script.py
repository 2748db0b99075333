"""A researcher's own training script as the training job of a model (``models.<name>.train``
or ``.command`` instead of ``arch``), and its determinism audit.

The pipeline runs the script once per replica with that replica's seeds, reads the test-set
logits (and optionally penultimate features) it writes, checks them and writes the same
predictions HDF5 the predict stage writes, so metrics, tables, figures, comparisons and the
report read a script's replicas like any other.

- ``train: "pkg.module:main"``: ``main(ctx)`` is called in this process with a :class:`Context`
  (nondet.training.sources.Sources plus the data set, the script's params and ``ctx.save``);
- ``command: "python train.py --seeds {seeds_json} --out {out}"``: any program, run through the
  shell with these placeholders filled in (each shell-quoted): ``{seeds_json}`` (one seed per
  source, null when off), ``{seeds_file}`` (the same JSON in a file), ``{out}``, ``{data}`` (the
  pipeline's data set, HDF5 with x_train, y_train, x_test, y_test), ``{params_json}``,
  ``{resample_json}`` (how the data seed resamples), ``{replica}``, ``{condition}``, ``{device}``.

What the script writes at ``{out}`` / ``ctx.out``: an ``.npz`` (the suffix of the path; NumPy
arrays, no pickles), an HDF5 file or a ``torch.save`` dict of tensors (read with
``weights_only=True``), whatever the suffix; arrays ``logits`` (n_test, classes), optionally
``features`` (n_test, dim) and ``labels`` (n_test,) (checked against the data set's test labels).
Any failure (an exception or exit status, nothing written, unreadable, wrong shape, NaN/inf) stops
the job with a message naming the model, the replica and the log.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

import numpy as np
import torch

from nondet.io.files import job_provenance
from nondet.io.h5io import atomic_h5
from nondet.seeds import SOURCES, ReplicaSeeds
from nondet.training.data import load_dataset
from nondet.training.replica import kernels_mode
from nondet.training.resample import DEFAULT as RESAMPLE_DEFAULT
from nondet.training.sources import Sources
from nondet.training.usermodel import resolve
from nondet.workflow.runtime import get_logger, setup_torch, stage

#: Placeholders a command template may use.
PLACEHOLDERS = (
    "seeds_json",
    "seeds_file",
    "out",
    "data",
    "params_json",
    "resample_json",
    "replica",
    "condition",
    "device",
)


class ScriptError(RuntimeError):
    """A training script failed; the message names the model, the replica and the log."""


class Context(Sources):
    """What ``main(ctx)`` receives: the per-source API (nondet.training.sources.Sources), and

    - ``ctx.data``: the pipeline's data set (nondet.training.data.Dataset: x_train, y_train, x_test,
      y_test as tensors on ``ctx.device``, images normalised); ``ctx.data_path``: its file;
    - ``ctx.params``: the model's ``params`` from the config (the script's hyperparameters);
    - ``ctx.model``, ``ctx.condition``, ``ctx.replica``; ``ctx.out``: where to write;
    - ``ctx.save(logits, features=None)``: the test-set outputs, in x_test's order.
    """

    def __init__(
        self,
        seeds,
        *,
        data,
        data_path,
        out,
        params,
        device,
        resample=None,
        model="",
        condition="",
        replica=0,
        log=print,
    ):
        super().__init__(seeds, device, resample)
        self.data, self.data_path, self.out, self.params = data, data_path, str(out), dict(params or {})
        self.model, self.condition, self.replica, self.log = model, condition, int(replica), log

    def save(self, logits, features=None) -> None:
        arrays = {"logits": _numpy(logits)}
        if features is not None:
            arrays["features"] = _numpy(features)
        np.savez(self.out, **arrays)


def _numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float32)


# --- reading what a script wrote ----------------------------------------------------------------


def sniff_format(path) -> str:
    """npz, npy, hdf5 or pt, from the file's first bytes (not its name)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x89HDF"):
        return "hdf5"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK"):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        return "pt" if any(n.endswith("data.pkl") for n in names) else "npz"
    raise ValueError("neither .npz, .npy, HDF5 nor a torch.save file")


def read_outputs(path, n_test: int, num_classes: int, y_test: np.ndarray, what: str) -> tuple:
    """(logits, features or None) of one replica, checked; ScriptError naming ``what``."""
    from nondet.io.runs import RunsError, read_array

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise ScriptError(f"{what}: the script wrote nothing at {path} (call ctx.save(logits) or write {{out}})")
    try:
        fmt = sniff_format(path)
        logits = read_array(path, fmt, None, "logits", "predictions")
        extra = (
            {k: read_array(path, fmt, k, k, "labels-in-predictions", required=False) for k in ("features", "labels")}
            if fmt != "npy"
            else {}
        )
    except (RunsError, ValueError, OSError) as e:
        raise ScriptError(f"{what}: cannot read {path}: {e}") from None
    logits = np.asarray(logits)
    if logits.shape != (n_test, num_classes):
        raise ScriptError(
            f"{what}: logits have shape {logits.shape}; expected (n_test, num_classes) = "
            f"({n_test}, {num_classes}), one row per test example in x_test's order"
        )
    logits = logits.astype(np.float32)
    if not np.isfinite(logits).all():
        rows = int((~np.isfinite(logits)).any(1).sum())
        raise ScriptError(f"{what}: NaN/inf logits in {rows} of {n_test} test examples (did training diverge?)")
    features = extra.get("features")
    if features is not None:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or len(features) != n_test or not np.isfinite(features).all():
            raise ScriptError(f"{what}: features must be finite, (n_test={n_test}, dim); got shape {features.shape}")
    labels = extra.get("labels")
    if labels is not None and not np.array_equal(np.asarray(labels).ravel(), y_test):
        raise ScriptError(f"{what}: the labels it wrote are not the data set's y_test (another test set or order?)")
    return logits, features


# --- running one replica ------------------------------------------------------------------------


def seeds_json(seeds: ReplicaSeeds) -> str:
    """Every source's seed (null when off), for a command's ``{seeds_json}``."""
    return json.dumps({s: getattr(seeds, s) for s in SOURCES})


def run_replica(
    spec: dict, job: dict, replica: int, seeds: ReplicaSeeds, data, data_path, device, workdir, log, log_path=None
) -> dict:
    """Run the script once; returns its checked logits and features, its kernel mode and time."""
    what = f"model {job['model']} replica {replica} ({job['condition']})"
    where = f"; see its log {log_path}" if log_path else ""
    out = Path(workdir) / f"replica_{replica:04d}.npz"
    out.unlink(missing_ok=True)
    resample = job["recipe"].get("resample", RESAMPLE_DEFAULT)
    started = time.perf_counter()
    if "train" in spec:
        fn = resolve(spec["train"], spec.get("pythonpath"), f"model {job['model']} train")
        ctx = Context(
            seeds,
            data=data,
            data_path=data_path,
            out=out,
            params=spec.get("params"),
            device=device,
            resample=resample,
            model=job["model"],
            condition=job["condition"],
            replica=replica,
            log=log,
        )
        try:
            fn(ctx)
        except Exception as e:
            log("".join(traceback.format_exception(e)))
            raise ScriptError(f"{what}: {spec['train']} raised {type(e).__name__}: {e}{where}") from None
    else:
        seeds_file = Path(workdir) / f"seeds_{replica:04d}.json"
        seeds_file.write_text(seeds_json(seeds))
        values = {
            "seeds_json": seeds_json(seeds),
            "seeds_file": seeds_file,
            "out": out,
            "data": data_path,
            "params_json": json.dumps(spec.get("params") or {}),
            "resample_json": json.dumps(resample),
            "replica": replica,
            "condition": job["condition"],
            "device": device,
        }
        try:
            command = spec["command"].format(**{k: shlex.quote(str(v)) for k, v in values.items()})
        except (KeyError, IndexError, ValueError) as e:
            raise ScriptError(
                f"model {job['model']} command: bad placeholder {e} in {spec['command']!r} "
                f"(known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}; write {{{{ }}}} for a brace)"
            ) from None
        # "python" in a command is the pipeline's interpreter (its environment's packages)
        env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
        if spec.get("pythonpath"):
            env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(spec["pythonpath"]), env.get("PYTHONPATH", "")])
        log(f"{what}: {command}")
        proc = subprocess.run(command, shell=True, capture_output=True, text=True, env=env)
        for line in (proc.stdout + proc.stderr).splitlines():
            log(f"  | {line}")
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["(no output)"]
            raise ScriptError(f"{what}: the command exited with status {proc.returncode} ({tail[0]}){where}")
    try:
        logits, features = read_outputs(out, len(data.y_test), data.num_classes, data.y_test.cpu().numpy(), what)
    except ScriptError as e:
        raise ScriptError(f"{e}{where}") from None
    # as for built-in models where the script uses ctx.kernels() and ctx.sampler(n, batch_size)
    # (a `train:` script); a `command:` script's kernels are its own, deterministic on a CPU
    mode = kernels_mode(seeds, device, cpu_standin="train" in spec)
    return {"logits": logits, "features": features, "kernels_mode": mode, "seconds": time.perf_counter() - started}


def job_seeds(job: dict) -> list[ReplicaSeeds]:
    """The seeds of each replica of ``job``, chosen by the plan (nondet.workflow.plan)."""
    return [ReplicaSeeds(**s) for s in job["seeds"]]


def write_script_predictions(out_path, prov: dict, replicas, results, labels) -> None:
    """The predict stage's file (nondet.io.files.write_predictions) from a script's outputs."""
    cka = "features" if all(r["features"] is not None for r in results) else "logits"
    with atomic_h5(out_path, prov) as f:
        f.create_dataset("logits", data=np.stack([r["logits"] for r in results]))
        f.create_dataset(
            "features", data=np.stack([r["features"] if cka == "features" else r["logits"] for r in results])
        )
        f.create_dataset("labels", data=labels)
        f.create_dataset("replicas", data=list(replicas))
        f.create_dataset("diverged", data=np.zeros(len(results), dtype=bool))
        f.create_dataset("absorbed", data=np.full(len(results), -1, dtype=np.int8))
        f.attrs["kernels_mode"] = results[0]["kernels_mode"]
        f.attrs["method"] = "plain"
        f.attrs["test_passes"] = 1
        f.attrs["cka_on"] = cka


@stage
def train_script(data_path, out_path, job: dict, log_path=None, threads: int = 1) -> None:
    """Run a model's training script for every replica of ``job`` (nondet.workflow.plan.train_job etc.)
    and write their test-set predictions."""
    log = get_logger(log_path)
    device = setup_torch(threads, job["device"])
    data = load_dataset(data_path, job["data_hash"], device)
    spec = job["model_spec"]
    label = "/".join(str(job[k]) for k in ("model", "comparison", "arm", "factorial", "condition") if job.get(k))
    entry = spec.get("train") or spec.get("command")
    log.info(f"training {label} replicas {job['replicas']} with {entry!r} on {device}")
    results = []
    with tempfile.TemporaryDirectory(prefix=".script-", dir=Path(out_path).parent) as work:
        for r, seeds in zip(job["replicas"], job_seeds(job)):
            res = run_replica(spec, job, r, seeds, data, data_path, device, work, log.info, log_path)
            acc = 100.0 * float((res["logits"].argmax(1) == data.y_test.cpu().numpy()).mean())
            log.info(f"[{label} r{r}] done in {res['seconds']:.1f}s, test_acc {acc:.2f}%")
            results.append(res)
    prov = job_provenance("predict", job, device, method="plain", views=["identity"], tta=None)
    write_script_predictions(out_path, prov, job["replicas"], results, data.y_test.cpu().numpy())
    log.info(f"wrote {out_path}")


# --- the determinism audit ----------------------------------------------------------------------


def judge(outputs: dict, sources, device_type: str) -> dict:
    """The audit's verdict from each run's logits: repeatable, and which seeds change them."""
    same = lambda a, b: np.array_equal(a, b)  # noqa: E731
    control = outputs["control"]
    repeatable = same(control, outputs["control again"])
    report = {"repeatable": repeatable, "sources": {}, "problems": [], "notes": []}
    if not repeatable:
        diff = float(np.max(np.abs(control - outputs["control again"])))
        report["problems"].append(
            "control replicas differ: two runs with identical seeds gave different test logits (max "
            f"|difference| {diff:.3g}); something in your script draws from a global RNG (torch, numpy, "
            "random, DataLoader worker seeds) or runs a nondeterministic kernel"
        )
    for s in sources:
        changed = not same(control, outputs[s])
        if not repeatable:
            report["sources"][s] = "unknown (control is not repeatable)"
        elif changed:
            report["sources"][s] = "honoured"
        elif s == "kernels" and device_type == "cpu":
            report["sources"][s] = "no effect on this CPU"
            report["notes"].append(
                "kernels: a CPU has no nondeterministic kernels; the labelled stand-in needs ctx.sampler(n, batch_size)"
            )
        elif s == "bitflip":
            report["sources"][s] = "ignored"
            report["problems"].append(
                "your script ignores the `bitflip` seed (or rounding absorbed the one-ulp flip): call "
                "ctx.flip(model) right after building the model"
            )
        else:
            report["sources"][s] = "ignored"
            report["problems"].append(
                f"your script ignores the `{s}` seed: varying it alone left the test logits bitwise unchanged"
            )
    return report


@stage
def audit_script(data_path, out_path, job: dict, log_path=None, threads: int = 1) -> None:
    """Run the script twice with identical seeds, then once per source varied alone; write the
    report (JSON) and fail, unless ``job['on_failure']`` is warn, when it finds a problem."""
    log = get_logger(log_path)
    device = setup_torch(threads, job["device"])
    data = load_dataset(data_path, job["data_hash"], device)
    spec, sources = job["model_spec"], job["sources"]
    log.info(
        f"auditing {job['model']} ({spec.get('train') or spec.get('command')!r}): control twice, then "
        f"{', '.join(sources) or 'no source'} one at a time"
    )
    outputs = {}
    with tempfile.TemporaryDirectory(prefix=".audit-", dir=Path(out_path).parent) as work:
        for i, run in enumerate(job["runs"]):  # control twice, then each source alone (the plan's seeds)
            name, seeds = run["name"], ReplicaSeeds(**run["seeds"])
            run_job = {**job, "condition": f"audit: {name}"}
            res = run_replica(spec, run_job, i, seeds, data, data_path, device, work, log.info, log_path)
            outputs[name] = res["logits"]
            log.info(f"audit run {name!r} done in {res['seconds']:.1f}s")
    report = judge(outputs, sources, device.type)
    report.update(model=job["model"], device=str(device), spec_hash=job["spec_hash"])
    for s, verdict in report["sources"].items():
        log.info(f"audit {job['model']}: {s}: {verdict}")
    log.info(f"audit {job['model']}: identical seeds give bitwise identical logits: {report['repeatable']}")
    for line in report["problems"]:
        log.warning(f"audit {job['model']}: {line}")
    if report["problems"] and job["on_failure"] == "fail":
        raise ScriptError(
            f"model {job['model']}: the determinism audit failed: "
            + "; ".join(report["problems"])
            + f" (see {log_path}; set models.{job['model']}.audit: warn to train anyway)"
        )
    from nondet.io.h5io import atomic_path

    with atomic_path(out_path) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=1) + "\n")
