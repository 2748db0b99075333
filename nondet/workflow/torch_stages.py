"""The stages that need torch (rules in envs/torch.yaml): user-model check, training, prediction
and twin runs (the data set stage needs no torch: nondet.workflow.analysis_stages). Each rule's
script in workflow_scripts/ calls one function here (through nondet.workflow.runtime.run_stage, or
directly for train and divergence), so the logic is importable, testable and the same by hand.
Training takes a nondet.training.recipe.TrainRun (what is trained, how, where) and a Bookkeeping
(label, log, checkpoint) per call."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch

from nondet.analysis.divergence import disagreement, log_steps, relative_distance, zero_from_step
from nondet.io import h5io
from nondet.io.files import (
    check_replicas,
    checkpoint_dir,
    checkpoints_for,
    job_expect,
    job_provenance,
    load_replicas,
    write_divergence,
    write_predictions,
    write_replicas,
)
from nondet.io.h5io import InputError
from nondet.methods import Method, MethodError, load_plugins
from nondet.seeds import ReplicaSeeds, torch_generator
from nondet.training.data import load_dataset
from nondet.training.loop import format_duration
from nondet.training.models import build_model
from nondet.training.recipe import Bookkeeping, TrainRun
from nondet.training.replica import set_kernel_mode, train_replica
from nondet.training.tta import check_fits, fit_kind, make_views, predict_tta
from nondet.training.usermodel import check_model as check
from nondet.training.vectorized import train_replicas_vectorized
from nondet.training.wide import supports as wide_supports
from nondet.workflow.runtime import get_logger, setup_torch, stage


@stage
def check_model(
    data_path, out_path, model: str, spec: dict, conditions, bitflip_tensor, data_hash: str, log_path=None
) -> None:
    """Import, build and run a user's model on two examples of the data set (nondet.training.usermodel)."""

    log = get_logger(log_path)
    data = load_dataset(data_path, data_hash)
    summary = check(
        spec, data.input_shape, data.num_classes, model, conditions, bitflip_tensor, examples=data.x_train[:2]
    )
    summary.update(input_shape=list(data.input_shape), num_classes=data.num_classes)
    with h5io.atomic_path(out_path) as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=1) + "\n")
    log.info(f"model {model} passed its checks: {json.dumps(summary)}")
    if summary["other_stochastic_layers"]:
        log.warning(
            f"model {model}: {', '.join(summary['other_stochastic_layers'])} draw from the global "
            "RNG, seeded per training step from the dropout seed (not per example)"
        )


@stage
def train(data_path, out_path, job: dict, log_path=None, threads: int = 1, checkpoint_every: int = 1) -> None:
    """Train the replicas of ``job`` (see nondet.workflow.plan.train_job) into one HDF5 file.

    Resumable: each replica checkpoints every ``checkpoint_every`` epochs (0 = never) into a
    hidden folder beside the output, and a job started again after a kill resumes from there.
    The folder is removed once the output is complete.
    """

    log = get_logger(log_path)
    h5io.check_writable(out_path)  # before hours of training, also with checkpoint_every 0
    device = setup_torch(threads, job["device"])
    data = load_dataset(data_path, job["data_hash"], device)
    keys = ("model", "comparison", "arm", "factorial", "condition")
    label = "/".join(str(job[k]) for k in keys if job.get(k))
    log.info(
        f"training {label} replicas {job['replicas']} on {device} "
        f"({job['recipe']['epochs']} epochs, {len(data.y_train)} examples)"
    )
    seeds_list = [ReplicaSeeds(**s) for s in job["seeds"]]  # chosen by the plan, one per replica
    ckpt_dir = checkpoint_dir(out_path)
    # One-ulp flips can be absorbed by rounding: train the unperturbed run with the same seeds in
    # this job (same process, machine and kernels) and compare final weights bitwise.
    reference = unperturbed_reference(seeds_list)
    runs = list(zip(job["replicas"], seeds_list))
    if reference is not None:
        log.info(f"[{label}] also training the unperturbed reference run (absorbed-flip check)")
        runs.append(("reference", reference))
    path = vectorization(job, device, seeds_list)
    vmap_asked = job.get("vectorize") == "on" or (job.get("vectorize") == "auto" and device.type == "cuda")
    if path == "sequential" and vmap_asked:
        # replicas of one vmap share each kernel call: on CUDA their kernel nondeterminism could
        # vanish inside a chunk and appear only between chunks
        log.info(f"[{label}] not vectorised: this condition varies the kernels source")
    if checkpoint_every:
        checkpoints_for(ckpt_dir, job, log.info, data.content_sha256)
    train_run = TrainRun(job["model_spec"], job["recipe"], device)  # the runs differ only in their seeds
    if path != "sequential":
        how = "torch.func.vmap" if path == "vmap" else "as one wide model, nondet.training.wide"
        log.info(f"training {len(runs)} runs together ({how})")
        book = Bookkeeping(
            f"[{label}]", log.info, ckpt_dir / "vectorized.pt" if checkpoint_every else None, checkpoint_every
        )
        outs = train_replicas_vectorized(train_run, [s for _, s in runs], data, book, wide=path == "wide")
    else:
        outs = []
        for r, seeds in runs:
            name = f"replica_{r:04d}" if r != "reference" else "reference"
            book = Bookkeeping(
                f"[{label} r{r}]", log.info, ckpt_dir / f"{name}.pt" if checkpoint_every else None, checkpoint_every
            )
            res = train_replica(train_run, seeds, data, book)
            outs.append(res)
            left = len(runs) - len(outs)
            eta = sum(o["seconds"] for o in outs) / len(outs) * left
            acc = res["curve"]["test_acc"][-1]
            log.info(
                f"[{label} r{r}] done in {res['seconds']:.1f}s"
                + (" DIVERGED" if res["diverged"] else f", final test_acc {acc:.2f}%" if np.isfinite(acc) else "")
                + (f"; job: {left} more run(s), ETA {format_duration(eta)}" if left else "")
            )
    absorbed = [None] * len(seeds_list)
    if reference is not None:
        ref_state = outs.pop()["state"]
        absorbed = [same_weights(res["state"], ref_state) for res in outs]
        log.info(
            f"[{label}] {sum(absorbed)} of {len(absorbed)} one-ulp flips absorbed (final weights "
            "bitwise equal to the unperturbed run)"
        )
    diverged = [r for r, res in zip(job["replicas"], outs) if res["diverged"]]
    if diverged and len(diverged) == len(outs):
        log.warning(
            f"[{label}] ALL {len(outs)} REPLICAS DIVERGED (training loss NaN/inf): this job's output "
            "holds no usable replica; metrics.on_diverged decides what the tables do with them"
        )
    elif diverged:
        log.warning(f"[{label}] replicas {diverged} diverged (training loss NaN/inf)")
    results = list(zip(job["replicas"], seeds_list, outs, absorbed))

    prov = job_provenance("train", job, device, content_sha256=data.content_sha256)
    write_replicas(out_path, prov, results)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    log.info(f"wrote {out_path}")


def vectorization(job: dict, device, seeds_list) -> str:
    """How a training job trains its replicas: ``vmap`` (``vectorize: on``, or ``auto`` on CUDA),
    ``wide`` (``auto`` on a CPU for the built-in cnn1d in fp32: nondet.training.wide, about twice as
    fast there) or ``sequential`` (``off``; ``auto`` on a CPU for every other model, where vmap was
    no faster). A condition that varies the kernels is never vmapped: on CUDA the replicas of a
    chunk would share each kernel call. The wide path runs on a CPU only, whose kernels are
    deterministic (the kernels source is the per-replica stand-in permutation there)."""
    mode, recipe = job.get("vectorize", "off"), job["recipe"]
    fp32 = not (recipe.get("bf16") or recipe.get("channels_last"))
    if mode == "on" or (mode == "auto" and device.type == "cuda"):
        return "vmap" if all(s.deterministic for s in seeds_list) else "sequential"
    if mode == "auto" and device.type == "cpu" and fp32 and wide_supports(job["model_spec"]):
        return "wide"
    return "sequential"


def unperturbed_reference(seeds_list):
    """Seeds of the run a job's one-ulp flips perturb (the same seeds without the flip), when
    every flipped replica of the job shares it (``bitflip``: control's seeds); else None."""

    if not seeds_list or any(s.bitflip is None for s in seeds_list):
        return None
    refs = {dataclasses.replace(s, bitflip=None) for s in seeds_list}
    return refs.pop() if len(refs) == 1 else None


def same_weights(a: dict, b: dict) -> bool:
    """Bitwise equality of two state dicts of arrays (parameters and buffers)."""
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def rebuild_model(model_spec: dict, weights: dict, data, device):
    """A model of ``model_spec`` holding ``weights`` (no random draw matters: all are replaced)."""

    model = build_model(model_spec, data.input_shape, data.num_classes, torch_generator(0), device)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
    return model


@stage
def predict(
    data_path,
    train_path,
    out_path,
    job: dict,
    log_path=None,
    threads: int = 1,
    method="plain",
    tta=None,
    plugins=(),
) -> None:
    """Test-set logits and penultimate features of every replica in a training file.

    ``method``: ``plain`` (final weights), ``tta`` (logits averaged over the views of ``tta``),
    ``snapshot`` (logits averaged over the snapshots saved at each cycle's end), ``ema`` and
    ``swa`` (the averaged weights), each also ``+tta``, or a registered plug-in's (``plugins``:
    the modules that register them, mitigation.plugins). Features come from the identity view of
    the method's last weight set (final weights for plain and snapshot, the averaged ones for
    ema and swa).
    """

    log = get_logger(log_path)
    device = setup_torch(threads, job["device"])
    # test logits of every condition with deterministic fp32 kernels (no TF32 convolutions on
    # CUDA): the kernels condition varies training, never the evaluation
    set_kernel_mode(True, device)
    data = load_dataset(data_path, job["data_hash"], device)
    replicas = load_replicas(train_path, job_expect(job))
    check_replicas(train_path, job, [r["replica"] for r in replicas])
    if replicas and replicas[0]["job"]["spec_hash"] != job["spec_hash"]:
        raise InputError(f"{train_path} was trained from a different job spec; rerun training")
    trained_on = replicas[0]["content_sha256"] if replicas else None
    if trained_on is not None and trained_on != data.content_sha256:
        raise InputError(
            f"input file {train_path} was trained on other data contents than {data_path} holds "
            f"now (arrays' SHA-256 {trained_on} != {data.content_sha256}): the data set was "
            f"regenerated since; {h5io.remake_hint(train_path)}"
        )
    # <method>+tta:<name>: one of a list of TTA specs (nondet.workflow.plan_methods.tta_spec); the
    # method's plug-in (nondet.methods.REGISTRY) says which weights of a replica predict
    load_plugins(plugins)
    parsed = Method.parse(method)
    use_tta = parsed.tta
    tta = fit_kind(tta if use_tta else None, data.x_test)
    check_fits(tta, data.x_test)
    views = make_views(tta, data.pad_fill)
    bf16 = bool(job["recipe"].get("bf16", False))
    logits, features, passes = [], [], 0
    for rep in replicas:
        try:
            weight_sets = parsed.plugin.weights(rep)
        except MethodError as e:
            raise InputError(f"{train_path}: {e}") from e
        zs, h = [], None
        for w in weight_sets:  # the last set gives the features (plain, snapshot: the final weights)
            z, h = predict_tta(rebuild_model(job["model_spec"], w, data, device), data.x_test, views, bf16=bf16)
            zs.append(z)
        z, passes = (zs[0] if len(zs) == 1 else sum(zs) / len(zs)), len(views) * len(zs)
        logits.append(z.cpu().numpy())
        features.append(h.cpu().numpy())
    prov = job_provenance(
        "predict",
        job,
        device,
        method=method,
        views=[name for name, _ in views],
        tta=tta if use_tta else None,
        content_sha256=data.content_sha256,
    )
    write_predictions(out_path, prov, logits, features, data.y_test.cpu().numpy(), replicas, method, passes)
    log.info(
        f"predicted {len(replicas)} replicas of {job['model']}/{job['condition']} ({method}, "
        f"{passes} forward passes per example) -> {out_path}"
    )


@stage
def divergence(data_path, out_path, job: dict, log_path=None, threads: int = 1) -> None:
    """Train the base run and its twins, recording parameter distance and test disagreement."""

    log = get_logger(log_path)
    device = setup_torch(threads, job["device"])
    data = load_dataset(data_path, job["data_hash"], device)
    recipe = job["recipe"]
    total = math.ceil(len(data.y_train) / recipe["batch_size"]) * recipe["epochs"]
    steps = log_steps(total, job["record_points"])
    train_run, runs = TrainRun(job["model_spec"], recipe, device), {}
    for run in job["runs"]:  # the base run and its twins, seeds chosen by the plan
        name, condition, seeds = run["name"], run["condition"], ReplicaSeeds(**run["seeds"])
        res = train_replica(train_run, seeds, data, Bookkeeping(f"[{job['model']} {name}]", log.info), steps)
        runs[name] = (condition, seeds, res)
    base = runs["base"][2]["records"]
    records = {}
    for name, (condition, seeds, res) in runs.items():
        rec = res["records"]
        d = relative_distance(base["params"], rec["params"])
        records[name] = {
            "condition": condition,
            "seeds": seeds.as_dict(),
            "bitflip": res["bitflip"],
            "distance": d,
            "disagreement": disagreement(base["test_logits"], rec["test_logits"]),
            "test_acc": res["curve"]["test_acc"],
        }
        if name == "base":
            continue
        zero = zero_from_step(base["steps"], d)
        records[name].update(absorbed=same_weights(res["state"], runs["base"][2]["state"]), zero_from_step=zero)
        log.info(
            f"{name}: distance {d[0]:.3g} at step 0 -> {d[-1]:.3g} at step {steps[-1]}, "
            f"final disagreement {records[name]['disagreement'][-1]:.2f}%"
            + (f"; ABSORBED: bitwise equal to the base run from step {zero}" if zero >= 0 else "")
        )
    write_divergence(
        out_path, job_provenance("divergence", job, device), base["steps"], total // recipe["epochs"], records
    )
    log.info(f"wrote {out_path}")
