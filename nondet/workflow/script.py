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
  ``{params_json}``, ``{resample_json}`` (the replica's resample: the data seed, null when the
  source is off, kind and fraction; ``python -m nondet resample --resample {resample_json} --n N``
  draws it for a training set of N examples), ``{train_index}`` (a .npy of the replica's training
  examples: its resample, or all of them), ``{train_data}`` (``{data}`` with x_train/y_train
  replaced by the replica's resample), ``{replica}``, ``{condition}``, ``{device}``. Relative files
  the command names are made absolute.

With ``data: script`` the script owns its data: the pipeline builds no data set for the model
(``ctx.data``, ``{data}``, ``{train_data}`` and ``{train_index}`` do not exist), the labels it
writes are the truth, and when the data source is on it draws the replica's resample of its own
training set itself (``ctx.train_index(n)``, or the command above) and reports it with the size
``n_train`` of that training set; the pipeline redraws it from the configured seed and checks.

Each job runs in a scratch folder beside its output (nondet.workflow.scriptbox: the working
folder of the script, kept when the job fails, removed when it succeeds), a command in its own
process group, under ``models.<name>.timeout``.

What the script writes at ``{out}`` / ``ctx.out``: an ``.npz`` (the suffix of the path; NumPy
arrays, no pickles), an HDF5 file or a ``torch.save`` dict of tensors (read with
``weights_only=True``), whatever the suffix; arrays ``logits`` (n_test, classes) and ``labels``
(n_test,) in the same row order (checked against the data set's test labels, so another split
or order is refused), optionally ``features`` (n_test, dim) and ``train_index`` (the training
examples it trained on; required when the data source is on, and checked against the replica's
resample; with ``data: script`` also ``n_train``, the size of the training set it indexes).
``ctx.save`` writes labels, train_index and n_train itself. Any failure (an exception or exit
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
from pathlib import Path

import numpy as np
import torch

from nondet.io.checksums import array_sha256
from nondet.io.files import job_provenance
from nondet.io.h5io import atomic_h5
from nondet.seeds import SOURCES, ReplicaSeeds
from nondet.training.data import load_dataset
from nondet.training.replica import kernels_mode
from nondet.training.resample import DEFAULT as RESAMPLE_DEFAULT
from nondet.training.resample import handed as handed_resample
from nondet.training.resample import replica_index
from nondet.training.sources import Sources, seed32
from nondet.training.usermodel import resolve
from nondet.workflow import scriptaudit, scriptbox
from nondet.workflow.runtime import get_logger, setup_torch, stage
from nondet.workflow.scriptio import ScriptError, check_owned_labels, check_resample, labels_sha256, read_outputs

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


class Context(Sources):
    """What ``main(ctx)`` receives: the per-source API (nondet.training.sources.Sources), and

    - ``ctx.data``: the pipeline's data set (nondet.training.data.Dataset: x_train, y_train, x_test,
      y_test as tensors on ``ctx.device``, images normalised); ``ctx.data_path``: its file (with
      ``data: script`` there is none: the script loads its own, and ``ctx.data`` says so);
    - ``ctx.params``: the model's ``params`` from the config (the script's hyperparameters);
    - ``ctx.model``, ``ctx.condition``, ``ctx.replica``; ``ctx.out``: where to write;
    - ``ctx.save(logits, features=None)``: the test-set outputs, in x_test's order (it writes
      the test labels and the training examples drawn by ``ctx.sampler``/``ctx.train_index``,
      with the size of the training set they were drawn from, too).
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
        if labels is None and getattr(self, "owned", False):
            raise ValueError("data: script: pass your test set's labels, ctx.save(logits, labels=y_test)")
        y = self.data.y_test if labels is None else labels
        arrays = {"logits": _numpy(logits), "labels": np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)}
        if features is not None:
            arrays["features"] = _numpy(features)
        if self.drawn_index is not None:
            arrays["train_index"] = np.asarray(self.drawn_index, dtype=np.int64)
            arrays["n_train"] = np.int64(self.drawn_n)
        np.savez(self.out, **arrays)


class OwnData:
    """``ctx.data`` of a ``data: script`` model: the pipeline builds no data set for it, and any
    use says so (the script loads its own)."""

    def __init__(self, model: str):
        self._model = model

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"model {self._model} has data: script, so the pipeline builds no data set for it and "
            f"ctx.data.{name} does not exist: load your own data, save with ctx.save(logits, labels=y_test) "
            "and draw the data source's resample with ctx.train_index(len(your training set))"
        )


def _numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float32)


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
    owned = spec.get("data") == "script"  # the script's own test set and training data: no data set of ours
    data_path = None if owned else os.path.abspath(data_path)
    resample = job["recipe"].get("resample", RESAMPLE_DEFAULT)
    n_train = None if owned else len(data.y_train)  # owned: the script reports it
    expected = None if owned else replica_index(seeds.data, n_train, resample)
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
            data=OwnData(job["model"]) if owned else data,
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
        ctx.owned = owned
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
        values = {
            "seeds_json": seeds_json(seeds),
            "seeds_file": seeds_file,
            "out": out,
            "params_json": json.dumps(spec.get("params") or {}),
            "resample_json": json.dumps(handed_resample(seeds.data, resample)),
            "replica": replica,
            "condition": job["condition"],
            "device": device,
        }
        if not owned:  # the pipeline's data set, and the replica's resample of it
            index_file = Path(workdir).resolve() / f"train_index_{replica:04d}.npy"
            np.save(index_file, np.arange(n_train) if expected is None else expected)
            train_data = data_path
            if handed:  # the script sees only its resample: nothing to report
                train_data = Path(workdir).resolve() / f"train_data_{replica:04d}.h5"
                write_train_data(data_path, expected, train_data)
            values.update(data=data_path, train_index=index_file, train_data=train_data)
        try:
            template = scriptbox.absolute_words(spec["command"])
            command = template.format(**{k: shlex.quote(str(v)) for k, v in values.items()})
        except (KeyError, IndexError, ValueError) as e:
            known = [p for p in PLACEHOLDERS if p in values]
            raise ScriptError(
                f"model {job['model']} command: bad placeholder {e} in {spec['command']!r} "
                f"(known: {', '.join('{' + p + '}' for p in known)}; write {{{{ }}}} for a brace"
                + ("; data: script has no data set of the pipeline's" if owned else "")
                + ")"
            ) from None
        # "python" in a command is the pipeline's interpreter (its environment's packages)
        env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
        env["NONDET_PROJECT_DIR"] = os.getcwd()  # the folder relative paths of the config start from
        # `python -m nondet resample` works in the command also where nondet is not installed (conda
        # envs): the folder holding the package, last on the path
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join([p for p in (env.get("PYTHONPATH"), package_root) if p])
        if spec.get("pythonpath"):
            env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(spec["pythonpath"]), env["PYTHONPATH"]])
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
        if owned:  # its labels are the truth; n_test and the classes come from its outputs
            logits, features, labels, reported = read_outputs(out, None, None, None, what)
        else:
            y_test = data.y_test.cpu().numpy()
            logits, features, labels, reported = read_outputs(out, len(y_test), data.num_classes, y_test, what)
        index, n_trained = check_resample(reported, seeds.data, resample, n_train, what, handed)
    except ScriptError as e:
        raise ScriptError(f"{e}{where}") from None
    # as for built-in models where the script uses ctx.kernels() and ctx.sampler(n, batch_size)
    # (a `train:` script); a `command:` script's kernels are its own, deterministic on a CPU
    mode = kernels_mode(seeds, device, cpu_standin="train" in spec)
    return {
        "logits": logits,
        "features": features,
        "labels": labels,
        "train_index": index,  # the replica's resample, checked (None: the whole training set)
        "n_train": n_trained,
        "kernels_mode": mode,
        "seconds": time.perf_counter() - started,
    }


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


def job_seeds(job: dict) -> list[ReplicaSeeds]:
    """The seeds of each replica of ``job``, chosen by the plan (nondet.workflow.plan)."""
    return [ReplicaSeeds(**s) for s in job["seeds"]]


def _pipeline_data(spec: dict, data_path, job: dict, device):
    """The pipeline's data set as tensors, or None for a ``data: script`` model (none is built)."""
    if spec.get("data") == "script":
        return None
    if data_path is None:
        raise ValueError(f"model {job['model']}: its training script reads the pipeline's data set, but none was given")
    return load_dataset(data_path, job["data_hash"], device)


def data_provenance(spec: dict, job: dict, results) -> dict:
    """What a script job's provenance says of its data: for ``data: script`` the SHA-256 of the
    script's test labels (its test set, which the config's dataset section does not describe);
    ``resampling`` only where a replica trained on a resample (kind, fraction, who drew it, and per
    replica n_train and the SHA-256 of its sorted index), so no resampling is recorded that did
    not happen."""
    out = {}
    owned = spec.get("data") == "script"
    if owned:
        out["data"] = "script"
        out["test_labels_sha256"] = labels_sha256(results[0]["labels"])
    drawn = {str(r): res for r, res in zip(job["replicas"], results) if res.get("train_index") is not None}
    if drawn:
        spec_ = {**RESAMPLE_DEFAULT, **job["recipe"].get("resample", {})}
        out["resampling"] = {
            "kind": spec_["kind"],
            "fraction": spec_["fraction"],
            "training_set": "the script's own" if owned else "the pipeline's",
            "replicas": {
                r: {
                    "n_train": int(res["n_train"]),
                    "size": int(len(res["train_index"])),
                    "distinct": int(np.unique(res["train_index"]).size),
                    "train_index_sha256": array_sha256(np.sort(np.asarray(res["train_index"], dtype=np.int64))),
                }
                for r, res in drawn.items()
            },
        }
    return out


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
    audit under audit: warn marks the file). ``data_path``: the pipeline's data set (None with
    ``data: script``: the script's data is its own)."""
    log = get_logger(log_path)
    device = setup_torch(threads, job["device"])
    spec = job["model_spec"]
    data = _pipeline_data(spec, data_path, job, device)
    label = "/".join(str(job[k]) for k in ("model", "comparison", "arm", "factorial", "condition") if job.get(k))
    entry = spec.get("train") or spec.get("command")
    log.info(f"training {label} replicas {job['replicas']} with {entry!r} on {device}")
    results = []
    work = scriptbox.scratch(out_path)
    with scriptbox.signals_end_groups():
        for r, seeds in zip(job["replicas"], job_seeds(job)):
            res = run_replica(spec, job, r, seeds, data, data_path, device, work, log.info, log_path, timeout)
            if spec.get("data") == "script":
                check_owned_labels(res["labels"], audit_path, results, job, r, log_path)
            acc = 100.0 * float((res["logits"].argmax(1) == res["labels"]).mean())
            log.info(f"[{label} r{r}] done in {res['seconds']:.1f}s, test_acc {acc:.2f}%")
            results.append(res)
    problems = audit_failure(audit_path)
    if problems:
        log.warning(f"{label}: trained although its determinism audit failed (audit: warn): {problems}")
    prov = job_provenance("predict", job, device, method="plain", views=["identity"], tta=None)
    prov.update(data_provenance(spec, job, results))
    write_script_predictions(out_path, prov, job["replicas"], results, results[0]["labels"], problems)
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
    spec, sources = job["model_spec"], job["sources"]
    data = _pipeline_data(spec, data_path, job, device)
    log.info(
        f"auditing {job['model']} ({spec.get('train') or spec.get('command')!r}): control twice, then "
        f"{', '.join(sources) or 'no source'} one at a time"
    )
    outputs, calls, labels = {}, [], None
    work = scriptbox.scratch(out_path)
    with scriptbox.signals_end_groups():
        for i, run in enumerate(job["runs"]):  # control twice, then each source alone (the plan's seeds)
            name, seeds = run["name"], ReplicaSeeds(**run["seeds"])
            run_job = {**job, "condition": f"audit: {name}"}
            with scriptaudit.seeding_calls(calls) if i == 0 else contextlib.nullcontext():
                res = run_replica(spec, run_job, i, seeds, data, data_path, device, work, log.info, log_path, timeout)
            outputs[name] = res["logits"]
            if spec.get("data") == "script":
                check_owned_labels(res["labels"], None, [{"labels": labels}] if i else [], run_job, i, log_path)
                labels = res["labels"]
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
    if spec.get("data") == "script":  # the test labels every training job of the model must match
        report["labels_sha256"] = labels_sha256(labels)
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
