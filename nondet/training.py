"""Training one replica with every source of randomness drawn from its own generator.

- init: a CPU ``torch.Generator`` seeded with ``seeds.init`` (same init on CPU and CUDA);
- shuffle: a permutation per epoch from ``derive_seed(seeds.shuffle, epoch)``;
- augment: per (seed, epoch, example index), see :mod:`nondet.augment`;
- dropout: masks per (seed, epoch, example index, layer), see :mod:`nondet.dropout`;
- kernels: deterministic kernels unless ``seeds.kernels`` is set; then CUDA runs its fast
  nondeterministic kernels and CPU (which has none) optionally permutes examples within each batch
  as a labelled stand-in (same mathematics, different summation order);
- bitflip: one initial weight nudged by one ulp, see :mod:`nondet.bitflip`.

Augmentation and dropout masks are looked up by example index, so a new data order (``shuffle``)
or the stand-in's within-batch permutation changes no example's augmentation or mask.

Stateless per-epoch/per-step generators mean a run is a pure function of its seeds and recipe.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from .augment import Augmenter
from .bitflip import apply_bitflip
from .data import Dataset
from .dropout import attach_masks
from .models import build_model, weight_decay_groups
from .predict import predict
from .seeds import ReplicaSeeds, derive_seed, torch_generator


def resolve_device(requested: str) -> torch.device:
    """``cpu``, ``cuda`` (fails at once if absent) or ``auto``."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {requested!r} was requested but no CUDA GPU is visible "
            "(torch.cuda.is_available() is False); use device: cpu or auto in the config"
        )
    if requested != "cpu" and not requested.startswith("cuda"):
        raise ValueError(f"unknown device {requested!r}; use cpu, cuda or auto")
    return torch.device(requested)


def set_kernel_mode(deterministic: bool, device: torch.device) -> None:
    """Deterministic kernels (control and every single-source condition) or the fast ones."""
    if device.type == "cuda" and deterministic:
        # Must be set before cuBLAS creates its handle; harmless if already set.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    # fp32 protocol: no TF32 anywhere (it is on by default for cuDNN convolutions).
    torch.backends.fp32_precision = "ieee"
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    torch.backends.cuda.matmul.fp32_precision = "ieee"


def kernels_mode(seeds: ReplicaSeeds, device: torch.device, cpu_standin: bool) -> str:
    """How the ``kernels`` source is realised in this run, for tables and provenance."""
    if seeds.deterministic:
        return "deterministic"
    if device.type == "cuda":
        return "cuda-nondeterministic"
    return "cpu-standin-batch-permutation" if cpu_standin else "cpu-deterministic"


def lr_at(step: int, total_steps: int, peak: float, warmup_steps: int = 0, cycles: int = 1):
    """Learning rate of optimizer step ``step`` (0-based): ``cycles`` cosine cycles, each with its
    own linear warm-up, reaching exactly 0 at the last step of every cycle (the snapshot points)."""
    if total_steps % cycles:
        raise ValueError(f"{total_steps} steps do not split into {cycles} equal cycles")
    cycle_steps = total_steps // cycles
    if warmup_steps >= cycle_steps:
        raise ValueError(f"warm-up of {warmup_steps} steps fills the {cycle_steps}-step cycle")
    s = step % cycle_steps
    if s < warmup_steps:
        return peak * (s + 1) / warmup_steps
    progress = (s + 1 - warmup_steps) / (cycle_steps - warmup_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def state_to_numpy(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def train_replica(
    model_spec: dict,
    recipe: dict,
    seeds: ReplicaSeeds,
    data: Dataset,
    device: torch.device,
    label: str = "",
    log=print,
    record_steps=(),
    checkpoint=None,
    checkpoint_every: int = 0,
) -> dict:
    """Train one replica; return its final weights, training curve and what was perturbed.

    ``recipe`` keys: epochs, batch_size, lr, momentum, nesterov, weight_decay, warmup_epochs,
    cycles (snapshot cycles; 1 = plain cosine), augment ("none"/"shift"/"crop_flip"),
    augment_size, kernels_cpu_standin, eval_every (epochs; 0 = never), and optionally bf16
    (autocast to bfloat16), channels_last (image models) and bitflip_tensor (where the one-ulp
    flip lands: None = any conv/linear weight, or a parameter name).
    Snapshots (weights at the end of every cycle) are returned when cycles > 1.
    ``record_steps``: after how many optimizer steps (0 = the initial model) to record the flat
    parameter vector and the test logits, for twin-divergence curves; recording changes nothing.
    ``checkpoint``: a path for resumable state (model, optimiser, schedule position, curve,
    snapshots), written atomically every ``checkpoint_every`` epochs; if it exists when training
    starts, training resumes from it. Every generator is re-derived from (seed, epoch, step), so a
    resumed run ends bitwise identical to an uninterrupted one (with deterministic kernels).
    """
    started = time.perf_counter()
    set_kernel_mode(seeds.deterministic, device)
    standin = (
        (not seeds.deterministic) and device.type == "cpu" and recipe["kernels_cpu_standin"]
    )

    model = build_model(
        model_spec, data.input_shape, data.num_classes, torch_generator(seeds.init), device
    )
    flipped = {}
    if seeds.bitflip is not None:
        flipped = apply_bitflip(model, seeds.bitflip, recipe.get("bitflip_tensor"))
    # Optional, off for the paper's fp32 protocol; both are part of the recipe, so provenance.
    bf16 = bool(recipe.get("bf16", False))
    channels_last = bool(recipe.get("channels_last", False)) and data.x_train.dim() == 4
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    opt = torch.optim.SGD(
        weight_decay_groups(model, recipe["weight_decay"]),
        lr=recipe["lr"],
        momentum=recipe["momentum"],
        nesterov=recipe["nesterov"],
    )
    n, bs, epochs, cycles = len(data.y_train), recipe["batch_size"], recipe["epochs"], recipe["cycles"]
    steps_per_epoch = math.ceil(n / bs)
    total = steps_per_epoch * epochs
    warmup = steps_per_epoch * recipe["warmup_epochs"]
    cycle_steps = total // cycles
    augment = Augmenter(recipe["augment"], seeds.augment, n, recipe["augment_size"])
    masks = attach_masks(model, seeds.dropout, n)
    curve = {k: [] for k in ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc")}
    snapshots, diverged, step = [], False, 0
    record_at, records = set(int(s) for s in record_steps), []

    def record():
        if step in record_at:
            params = torch.cat([p.detach().flatten() for p in model.parameters()])
            records.append((step, params.cpu().numpy().copy(), predict(model, data.x_test, bf16=bf16)[0]))

    start_epoch, resume_key = 0, {"seeds": seeds.as_dict(), "recipe": recipe, "model": model_spec}
    if checkpoint is not None and os.path.exists(checkpoint):
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        if state["key"] == resume_key:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            start_epoch, step, curve = state["epoch"], state["step"], state["curve"]
            snapshots, records, diverged = state["snapshots"], state["records"], state["diverged"]
            if diverged:
                start_epoch = epochs
            log(f"{label} resuming from checkpoint {checkpoint} after epoch {start_epoch}")
        else:
            log(f"{label} ignoring checkpoint {checkpoint}: it belongs to a different run")

    def save_checkpoint(epochs_done):
        tmp = f"{checkpoint}.tmp-{os.getpid()}"
        torch.save(
            {"key": resume_key, "model": model.state_dict(), "optimizer": opt.state_dict(),
             "epoch": epochs_done, "step": step, "curve": curve, "snapshots": snapshots,
             "records": records, "diverged": diverged},
            tmp,
        )  # fmt: skip
        os.replace(tmp, checkpoint)

    for epoch in range(start_epoch, epochs):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=torch_generator(derive_seed(seeds.shuffle, epoch)))
        order = order.to(device)
        loss_sum, correct, lr = torch.zeros((), device=device), torch.zeros((), device=device), 0.0
        for b in range(steps_per_epoch):
            record()
            index = order[b * bs : (b + 1) * bs]
            if standin:
                perm = torch.randperm(
                    len(index), generator=torch_generator(derive_seed(seeds.kernels, epoch, b))
                ).to(device)
                index = index[perm]
            x = augment(data.x_train[index], index, epoch)
            y = data.y_train[index]
            for m in masks:
                m.select(epoch, index)
            lr = lr_at(step, total, recipe["lr"], warmup, cycles)
            for group in opt.param_groups:
                group["lr"] = lr
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            step += 1
            if cycles > 1 and step % cycle_steps == 0:
                snapshots.append(state_to_numpy(model))
        train_loss = float(loss_sum) / n
        curve["epoch"].append(epoch + 1)
        curve["lr"].append(lr)
        curve["train_loss"].append(train_loss)
        curve["train_acc"].append(100.0 * float(correct) / n)
        test_loss = test_acc = float("nan")
        every = recipe["eval_every"]
        if every and ((epoch + 1) % every == 0 or epoch + 1 == epochs):
            logits_test, _ = predict(model, data.x_test, bf16=bf16)
            test_loss = float(F.cross_entropy(logits_test, data.y_test))
            test_acc = 100.0 * float((logits_test.argmax(1) == data.y_test).float().mean())
        curve["test_loss"].append(test_loss)
        curve["test_acc"].append(test_acc)
        log(
            f"{label} epoch {epoch + 1}/{epochs} loss {train_loss:.4f} "
            f"train_acc {curve['train_acc'][-1]:.1f}% test_acc {test_acc:.1f}% "
            f"lr {lr:.3g} ({time.perf_counter() - t0:.2f}s)"
        )
        if not math.isfinite(train_loss):
            diverged = True
            log(f"{label} DIVERGED: training loss is {train_loss} in epoch {epoch + 1}; stopping")
            break
        if checkpoint is not None and checkpoint_every and (epoch + 1) % checkpoint_every == 0:
            save_checkpoint(epoch + 1)

    record()
    if checkpoint is not None and start_epoch < epochs:
        save_checkpoint(len(curve["epoch"]))  # a finished replica is skipped on resume
    return {
        "state": state_to_numpy(model),
        "curve": {k: np.asarray(v, dtype=np.float64) for k, v in curve.items()},
        "snapshots": snapshots,
        "bitflip": flipped,
        "diverged": diverged,
        "kernels_mode": kernels_mode(seeds, device, recipe["kernels_cpu_standin"]),
        "seconds": time.perf_counter() - started,
        "model": model,
        "records": {
            "steps": np.array([r[0] for r in records], dtype=np.int64),
            "params": np.stack([r[1] for r in records]) if records else np.zeros((0, 0)),
            "test_logits": (
                torch.stack([r[2] for r in records]).cpu().numpy() if records else np.zeros(0)
            ),
        },
    }
