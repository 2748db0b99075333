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
  source in 0 ... 2**32 - 1, null when off), ``{seeds_file}`` (the same JSON in a file),
  ``{out}``, ``{data}`` (the pipeline's data set, HDF5 with x_train, y_train, x_test, y_test),
  ``{params_json}``, ``{resample_json}`` (how the data seed resamples), ``{train_index}`` (a .npy
  of the replica's training examples: its resample, or all of them), ``{train_data}`` (``{data}``
  with x_train/y_train replaced by the replica's resample), ``{replica}``,
  ``{condition}``, ``{device}``. Relative files the command names are made absolute.

Each job runs in a scratch folder beside its output (nondet.workflow.scriptbox: the working
folder of the script, kept when the job fails, removed when it succeeds), a command in its own
process group, under ``models.<name>.timeout``.

What the script writes at ``{out}`` / ``ctx.out``: an ``.npz`` (the suffix of the path; NumPy
arrays, no pickles), an HDF5 file or a ``torch.save`` dict of tensors (read with
``weights_only=True``), whatever the suffix; arrays ``logits`` (n_test, classes) and ``labels``
(n_test,) in the same row order (checked against the data set's test labels, so another split
or order is refused), optionally ``features`` (n_test, dim) and ``train_index`` (the training
examples it trained on; required when the data source is on, and checked against the replica's
resample). ``ctx.save`` writes labels and train_index itself. Any failure (an exception or exit
status, a timeout, nothing written, unreadable, wrong shape, NaN/inf, other labels, another
resample) stops the job with a message naming the model, the replica and the log.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import sys
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
from nondet.training.resample import DEFAULT as RESAMPLE_DEFAULT
from nondet.training.resample import replica_index
from nondet.training.sources import Sources, seed32
from nondet.training.usermodel import resolve
from nondet.workflow import scriptaudit, scriptbox
from nondet.workflow.runtime import get_logger, setup_torch, stage

#: Placeholders a command template may use.
PLACEHOLDERS = (
    "seeds_json",
    "seeds_file",
    "out",
    "data",
    "params_json",
    "resample_json",
    "train_index",
    "train_data",
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
    - ``ctx.save(logits, features=None)``: the test-set outputs, in x_test's order (it writes
      the test labels and the training examples drawn by ``ctx.sampler``/``ctx.train_index`` too).
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

    def save(self, logits, features=None, labels=None) -> None:
        """Write the test logits (and features) with the test labels in the same row order
        (``labels``: yours, when the rows are not x_test's; default the data set's y_test)."""
        y = self.data.y_test if labels is None else labels
        arrays = {"logits": _numpy(logits), "labels": np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)}
        if features is not None:
            arrays["features"] = _numpy(features)
        if self.drawn_index is not None:
            arrays["train_index"] = np.asarray(self.drawn_index, dtype=np.int64)
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


def read_outputs(
    path, n_test: int, num_classes: int, y_test: np.ndarray, what: str, train_index=None, handed=False
) -> tuple:
    """(logits, features or None) of one replica, checked; ScriptError naming ``what``.
    ``train_index``: the training examples the replica must have trained on (its resample), when
    the data source is on (None: all of them, checked only if the script reports its own)."""
    from nondet.io.runs import RunsError, read_array

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise ScriptError(f"{what}: the script wrote nothing at {path} (call ctx.save(logits) or write {{out}})")
    try:
        fmt = sniff_format(path)
        logits = read_array(path, fmt, None, "logits", "predictions")
        names = ("features", "labels", "train_index")
        extra = (
            {k: read_array(path, fmt, k, k, "labels-in-predictions", required=False) for k in names}
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
    check_labels(extra.get("labels"), y_test, what)
    logits = logits.astype(np.float32)
    if not np.isfinite(logits).all():
        rows = int((~np.isfinite(logits)).any(1).sum())
        raise ScriptError(f"{what}: NaN/inf logits in {rows} of {n_test} test examples (did training diverge?)")
    features = extra.get("features")
    if features is not None:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or len(features) != n_test or not np.isfinite(features).all():
            raise ScriptError(f"{what}: features must be finite, (n_test={n_test}, dim); got shape {features.shape}")
    if train_index is not None or extra.get("train_index") is None or not handed:
        check_train_index(extra.get("train_index"), train_index, what)
    return logits, features


def check_labels(labels, y_test: np.ndarray, what: str) -> None:
    """The labels a script wrote must be the data set's y_test, row for row: another split or
    another row order would be scored against the wrong labels."""
    if labels is None:
        raise ScriptError(
            f"{what}: the script wrote no `labels`: write the test labels in the logits' row order "
            "beside them (np.savez(out, logits=..., labels=y_test); ctx.save does it), so that "
            "another test split or row order cannot be scored against the data set's labels"
        )
    labels = np.asarray(labels).ravel()
    if labels.shape != y_test.shape:
        raise ScriptError(
            f"{what}: it wrote {labels.size} labels for {y_test.size} test examples: its test set is "
            "not the data set's (own split?); score the pipeline's x_test, in its order"
        )
    wrong = int((labels != y_test).sum())
    if wrong:
        same_set = np.array_equal(np.sort(labels), np.sort(y_test))
        why = (
            "the same labels in another row order: write the logits in x_test's order"
            if same_set
            else "another test set (its own split?): score the pipeline's x_test ({data}), in its order"
        )
        raise ScriptError(
            f"{what}: the labels it wrote differ from the data set's y_test in {wrong} of {labels.size} rows: " + why
        )


def check_train_index(written, expected, what: str) -> None:
    """With the data source on, the script must report the training examples it used (the
    replica's resample, any order): provenance never records a resampling that did not happen."""
    if expected is None:
        if written is not None and not np.array_equal(np.sort(np.asarray(written).ravel()), np.arange(len(written))):
            raise ScriptError(
                f"{what}: the data source is off in this replica, but the script reports training on a "
                "resample of its own (train_index is not every example once): draw no resample of your own"
            )
        return
    if written is None:
        raise ScriptError(
            f"{what}: the data source is on but the script reports no `train_index`: train on the "
            "replica's resample ({train_index}: a .npy of example indices; in Python ctx.sampler or "
            "ctx.train_index) and write the indices it used beside the logits (train_index=...)"
        )
    written = np.sort(np.asarray(written, dtype=np.int64).ravel())
    if not np.array_equal(written, np.sort(np.asarray(expected, dtype=np.int64))):
        raise ScriptError(
            f"{what}: the training examples it reports ({written.size}, {np.unique(written).size} distinct) "
            f"are not the replica's resample ({len(expected)}, {np.unique(expected).size} distinct): "
            "train on {train_index} (or ctx.train_index), not on a resample of your own"
        )


# --- running one replica ------------------------------------------------------------------------


def handed_seeds(seeds: ReplicaSeeds) -> dict:
    """Every source's seed as handed to a script: 0 ... 2**32 - 1 (null when off)."""
    return {s: seed32(getattr(seeds, s)) for s in SOURCES}


def seeds_json(seeds: ReplicaSeeds) -> str:
    """Every source's seed (null when off), for a command's ``{seeds_json}``."""
    return json.dumps(handed_seeds(seeds))


def run_replica(
    spec: dict,
    job: dict,
    replica: int,
    seeds: ReplicaSeeds,
    data,
    data_path,
    device,
    workdir,
    log,
    log_path=None,
    timeout: float = scriptbox.DEFAULT_TIMEOUT,
    before_call=None,
) -> dict:
    """Run the script once, in ``workdir``/replica_NNNN; returns its checked logits and features,
    its kernel mode and time. ``before_call``: called right before a ``train:`` callable (the
    audit's probes)."""
    what = f"model {job['model']} replica {replica} ({job['condition']})"
    cwd = Path(workdir) / f"replica_{replica:04d}"
    where = f"; see its log {log_path}" if log_path else ""
    where += f" and its working folder {cwd} (kept until the job reruns)"
    shutil.rmtree(cwd, ignore_errors=True)
    cwd.mkdir(parents=True)
    out = (Path(workdir) / f"replica_{replica:04d}.npz").resolve()
    out.unlink(missing_ok=True)
    data_path = os.path.abspath(data_path)
    resample = job["recipe"].get("resample", RESAMPLE_DEFAULT)
    n_train = len(data.y_train)
    expected = replica_index(seeds.data, n_train, resample)
    handed = "train" not in spec and "{train_data}" in spec["command"]  # indices into its own file
    stopped = (
        f"{what}: no result after {timeout:g} s, so it was stopped (raise models.{job['model']}.timeout "
        f"if it needs longer){where}"
    )
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
        if before_call:
            before_call()
        try:
            with scriptbox.working_folder(cwd), scriptbox.alarm(timeout):
                fn(ctx)
        except scriptbox.ScriptTimeout:
            raise ScriptError(stopped) from None
        except Exception as e:
            log("".join(traceback.format_exception(e)))
            raise ScriptError(f"{what}: {spec['train']} raised {type(e).__name__}: {e}{where}") from None
    else:
        seeds_file = Path(workdir).resolve() / f"seeds_{replica:04d}.json"
        seeds_file.write_text(seeds_json(seeds))
        index_file = Path(workdir).resolve() / f"train_index_{replica:04d}.npy"
        np.save(index_file, np.arange(n_train) if expected is None else expected)
        train_data = data_path
        if "{train_data}" in spec["command"]:  # the script sees only its resample: nothing to report
            train_data = Path(workdir).resolve() / f"train_data_{replica:04d}.h5"
            write_train_data(data_path, expected, train_data)
            expected = None
        values = {
            "seeds_json": seeds_json(seeds),
            "seeds_file": seeds_file,
            "out": out,
            "data": data_path,
            "params_json": json.dumps(spec.get("params") or {}),
            "resample_json": json.dumps(resample),
            "train_index": index_file,
            "train_data": train_data,
            "replica": replica,
            "condition": job["condition"],
            "device": device,
        }
        try:
            template = scriptbox.absolute_words(spec["command"])
            command = template.format(**{k: shlex.quote(str(v)) for k, v in values.items()})
        except (KeyError, IndexError, ValueError) as e:
            raise ScriptError(
                f"model {job['model']} command: bad placeholder {e} in {spec['command']!r} "
                f"(known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}; write {{{{ }}}} for a brace)"
            ) from None
        # "python" in a command is the pipeline's interpreter (its environment's packages)
        env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
        env["NONDET_PROJECT_DIR"] = os.getcwd()  # the folder relative paths of the config start from
        if spec.get("pythonpath"):
            env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(spec["pythonpath"]), env.get("PYTHONPATH", "")])
        log(f"{what}: {command}")
        output = Path(workdir) / f"output_{replica:04d}.txt"
        try:
            rc = scriptbox.run_command(command, cwd, env, output, timeout)
        except scriptbox.ScriptTimeout:
            _copy_output(output, log)
            raise ScriptError(stopped) from None
        lines = _copy_output(output, log)
        if rc != 0:
            tail = [ln for ln in lines if ln.strip()][-1:] or ["(no output)"]
            raise ScriptError(f"{what}: the command exited with status {rc} ({tail[0].strip()}){where}")
    try:
        logits, features = read_outputs(
            out, len(data.y_test), data.num_classes, data.y_test.cpu().numpy(), what, expected, handed
        )
    except ScriptError as e:
        raise ScriptError(f"{e}{where}") from None
    mode = _kernels_mode(seeds, device, "train" in spec)
    return {"logits": logits, "features": features, "kernels_mode": mode, "seconds": time.perf_counter() - started}


def write_train_data(data_path, index, out) -> None:
    """``{data}`` as a file of its own whose x_train/y_train are rows ``index`` (None: all)."""
    import h5py

    with h5py.File(data_path, "r") as src, h5py.File(out, "w") as dst:
        for name, item in src.items():
            rows = item[()]
            if name in ("x_train", "y_train") and index is not None:
                rows = rows[np.asarray(index)]
            dst.create_dataset(name, data=rows)
        for k, v in src.attrs.items():
            dst.attrs[k] = v


def _copy_output(path, log) -> list[str]:
    """A command's output into the log, progress bars collapsed; returns its lines."""
    lines = scriptbox.collapse_progress(Path(path).read_text(errors="replace")) if Path(path).exists() else []
    for line in lines:
        log(f"  | {line}")
    return lines


def _kernels_mode(seeds: ReplicaSeeds, device, uses_api: bool) -> str:
    """How the kernels source is realised: as for built-in models (nondet.training.replica.kernels_mode)
    where the script uses ctx.kernels() and ctx.sampler(n, batch_size); a command's own."""
    if seeds.deterministic:
        return "deterministic"
    if device.type == "cuda":
        return "cuda-nondeterministic"
    return "cpu-standin-batch-permutation" if uses_api else "cpu-deterministic"


def job_seeds(job: dict) -> list[ReplicaSeeds]:
    """The seeds of each replica of ``job``, chosen by the plan (nondet.workflow.plan)."""
    return [ReplicaSeeds(**s) for s in job["seeds"]]


def write_script_predictions(out_path, prov: dict, replicas, results, labels, audit: str = "") -> None:
    """The predict stage's file (nondet.io.files.write_predictions) from a script's outputs;
    ``audit``: what a failed determinism audit (under audit: warn) found, else empty."""
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
        if audit:
            f.attrs["audit_failed"] = audit


def audit_failure(audit_path) -> str:
    """What a failed audit found ('' when it passed or there is none): its problems, joined."""
    if not audit_path:
        return ""
    report = json.loads(Path(audit_path).read_text())
    return "; ".join(report.get("problems", []))


@stage
def train_script(
    data_path, out_path, job: dict, log_path=None, threads: int = 1, timeout=scriptbox.DEFAULT_TIMEOUT, audit_path=None
) -> None:
    """Run a model's training script for every replica of ``job`` (nondet.workflow.plan.train_job etc.)
    and write their test-set predictions; ``audit_path``: the model's audit report (a failed
    audit under audit: warn marks the file)."""
    log = get_logger(log_path)
    device = setup_torch(threads, job["device"])
    data = load_dataset(data_path, job["data_hash"], device)
    spec = job["model_spec"]
    label = "/".join(str(job[k]) for k in ("model", "comparison", "arm", "factorial", "condition") if job.get(k))
    entry = spec.get("train") or spec.get("command")
    log.info(f"training {label} replicas {job['replicas']} with {entry!r} on {device}")
    results = []
    work = scriptbox.scratch(out_path)
    with scriptbox.signals_end_groups():
        for r, seeds in zip(job["replicas"], job_seeds(job)):
            res = run_replica(spec, job, r, seeds, data, data_path, device, work, log.info, log_path, timeout)
            acc = 100.0 * float((res["logits"].argmax(1) == data.y_test.cpu().numpy()).mean())
            log.info(f"[{label} r{r}] done in {res['seconds']:.1f}s, test_acc {acc:.2f}%")
            results.append(res)
    problems = audit_failure(audit_path)
    if problems:
        log.warning(f"{label}: trained although its determinism audit failed (audit: warn): {problems}")
    prov = job_provenance("predict", job, device, method="plain", views=["identity"], tta=None)
    write_script_predictions(out_path, prov, job["replicas"], results, data.y_test.cpu().numpy(), problems)
    shutil.rmtree(work, ignore_errors=True)
    log.info(f"wrote {out_path}")


# --- the determinism audit (its verdict: nondet.workflow.scriptaudit) ---------------------------

judge = scriptaudit.judge


def _diagnose(spec, job, data, data_path, device, work, log, log_path, timeout) -> list[str]:
    """Which global generator a ``train:`` script's logits depend on: control with every global
    generator at a fixed state, again, then with one of them at another state."""
    names = scriptaudit.global_names(device)
    seeds = ReplicaSeeds(**job["runs"][0]["seeds"])
    uses: dict = {}

    def run(name, moved=()):
        def before():
            scriptaudit.set_globals(1, names, device)
            scriptaudit.set_globals(2, moved, device)

        run_job = {**job, "condition": f"audit: {name}"}
        with scriptaudit.torch_uses(uses):
            res = run_replica(spec, run_job, 90, seeds, data, data_path, device, work, log, log_path, timeout, before)
        return res["logits"]

    fixed = run("control, global generators fixed")
    if not np.array_equal(fixed, run("control, global generators fixed, again")):
        return [
            "with every global generator fixed, two control runs still differ: a nondeterministic "
            "kernel, a thread race or a clock decides something (call ctx.kernels() for deterministic kernels)"
        ]
    depends = {n: not np.array_equal(fixed, run(f"control, {n} moved", [n])) for n in names}
    for n, moved in depends.items():
        log(f"audit {job['model']}: the logits {'depend' if moved else 'do not depend'} on {n}")
    return scriptaudit.causes(depends, uses)


@stage
def audit_script(
    data_path, out_path, job: dict, log_path=None, threads: int = 1, timeout=scriptbox.DEFAULT_TIMEOUT
) -> None:
    """Run the script twice with identical seeds, then once per source varied alone (and with
    init and shuffle swapped); write the report (JSON) and fail, unless ``job['on_failure']`` is
    warn, when it finds a problem. On failure the report is also written beside the log."""
    log = get_logger(log_path)
    device = setup_torch(threads, job["device"])
    data = load_dataset(data_path, job["data_hash"], device)
    spec, sources = job["model_spec"], job["sources"]
    log.info(
        f"auditing {job['model']} ({spec.get('train') or spec.get('command')!r}): control twice, then "
        f"{', '.join(sources) or 'no source'} one at a time"
    )
    outputs, calls = {}, []
    work = scriptbox.scratch(out_path)
    with scriptbox.signals_end_groups():
        for i, run in enumerate(job["runs"]):  # control twice, then each source alone (the plan's seeds)
            name, seeds = run["name"], ReplicaSeeds(**run["seeds"])
            run_job = {**job, "condition": f"audit: {name}"}
            with scriptaudit.seeding_calls(calls) if i == 0 else contextlib.nullcontext():
                res = run_replica(spec, run_job, i, seeds, data, data_path, device, work, log.info, log_path, timeout)
            outputs[name] = res["logits"]
            log.info(f"audit run {name!r} done in {res['seconds']:.1f}s")
        report = judge(outputs, sources, device.type)
        control = ReplicaSeeds(**job["runs"][0]["seeds"])
        seeding = scriptaudit.name_seeding(calls, control)
        if seeding and (report["problems"] or any(v != "honoured" for v in report["sources"].values())):
            report["problems"] += seeding
        else:
            report["notes"] += seeding
        if not report["repeatable"] and "train" in spec:
            log.info(f"audit {job['model']}: looking for the global generator behind it (3-5 more runs)")
            report["causes"] = _diagnose(spec, job, data, data_path, device, work, log.info, log_path, timeout)
        elif not report["repeatable"]:
            report["notes"].append(
                "a command runs in its own process, where the audit cannot see which global generator "
                "it draws from: check python random, numpy's global RNG, torch.manual_seed and DataLoader workers"
            )
    report.update(model=job["model"], device=str(device), spec_hash=job["spec_hash"])
    for s, verdict in report["sources"].items():
        log.info(f"audit {job['model']}: {s}: {verdict}")
    log.info(f"audit {job['model']}: identical seeds give bitwise identical logits: {report['repeatable']}")
    for line in report["problems"] + [f"cause: {c}" for c in report["causes"]]:
        log.warning(f"audit {job['model']}: {line}")
    text = json.dumps(report, indent=1) + "\n"
    if report["problems"] and job["on_failure"] == "fail":
        kept = Path(log_path).with_suffix(".json") if log_path else None
        if kept:
            kept.write_text(text)
        causes = f"; caused by: {'; '.join(report['causes'])}" if report["causes"] else ""
        raise ScriptError(
            f"model {job['model']}: the determinism audit failed: "
            + "; ".join(report["problems"])
            + causes
            + f" (see {log_path}"
            + (f" and {kept}" if kept else "")
            + f"; set models.{job['model']}.audit: warn to train anyway)"
        )
    from nondet.io.h5io import atomic_path

    with atomic_path(out_path) as tmp:
        Path(tmp).write_text(text)
    shutil.rmtree(work, ignore_errors=True)
