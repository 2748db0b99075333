"""Training one replica with every source of randomness drawn from its own generator.

- init: a CPU ``torch.Generator`` seeded with ``seeds.init`` (same init on CPU and CUDA);
- shuffle: a permutation per epoch from ``derive_seed(seeds.shuffle, epoch)``;
- augment: per (seed, epoch, example index), see :mod:`nondet.training.augment`;
- dropout: masks per (seed, epoch, example index, layer), see :mod:`nondet.training.dropout`;
- kernels: deterministic kernels unless ``seeds.kernels`` is set; then CUDA runs its fast
  nondeterministic kernels and CPU (which has none) optionally permutes examples within each batch
  as a labelled stand-in (same mathematics, different summation order);
- bitflip: one initial weight nudged by one ulp, see :mod:`nondet.training.bitflip`;
- data: a bootstrap or subsample of the training set (None: all of it), see :mod:`nondet.training.resample`.

Augmentation and dropout masks are looked up by example index, so a new data order (``shuffle``)
or the stand-in's within-batch permutation changes no example's augmentation or mask.

Stateless per-epoch/per-step generators mean a run is a pure function of its seeds and recipe.
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np
import torch

from nondet.seeds import ReplicaSeeds, derive_seed, torch_generator
from nondet.training.augment import Augmenter
from nondet.training.averaging import Averages
from nondet.training.bitflip import apply_bitflip
from nondet.training.data import Dataset
from nondet.training.dropout import ExampleMasks, SeededDropout
from nondet.training.loop import Curve, SequentialStep, run_epochs, state_to_numpy
from nondet.training.models import build_model, weight_decay_groups
from nondet.training.optim import SGD
from nondet.training.recipe import Bookkeeping, TrainRun
from nondet.training.resample import replica_index


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
    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(deterministic)
    else:
        # torch.use_deterministic_algorithms also sets Inductor's flag, and importing Inductor
        # costs 1.5-3 s per process (most of a small job); nothing here compiles, so set the
        # eager-mode flag alone
        torch._C._set_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    # fp32 protocol: no TF32 anywhere (it is on by default for cuDNN convolutions). Set through
    # the legacy flags: torch 2.14 then reads TF32 as off through both APIs (matmul "ieee", cuDNN
    # not "tf32"), whereas setting fp32_precision = "ieee" (even on every level) leaves the legacy
    # getters torch.backends.cudnn.allow_tf32 and cudnn.flags() raising, which breaks any code that
    # reads them (tests/test_training.py::test_kernel_mode_turns_tf32_off_readably).
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def accelerator_name(device: torch.device) -> str:
    """The hardware of a resumable run: a checkpoint written on another GPU type (or on the CPU)
    is not resumed from, since its kernels round differently (a control replica resumed there
    would no longer be bitwise the uninterrupted run)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


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


def lr_authors(step: int, total_steps: int, peak: float, warmup_steps: int = 0, cycles: int = 1):
    """The authors' schedule (train.py ``learning_rate_fn``, recipe ``schedule: authors``): within
    each of ``cycles`` cycles, starting at step s = 0 of the cycle, linear warm-up from 0,
    ``peak * s / warmup_steps`` while s <= warmup_steps (so the first step has lr 0), then one
    cosine over the whole cycle counted from its start, ``peak * 0.5 * (1 + cos(pi * s /
    cycle_steps))`` (not restarted after the warm-up)."""
    if total_steps % cycles:
        raise ValueError(f"{total_steps} steps do not split into {cycles} equal cycles")
    cycle_steps = total_steps // cycles
    s = step % cycle_steps
    if warmup_steps and s <= warmup_steps:
        return peak * s / warmup_steps
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(s / cycle_steps, 1.0)))


SCHEDULES = {"cosine_restart": lr_at, "authors": lr_authors}


def param_groups(model, recipe: dict):
    """The optimiser's parameter groups for ``recipe`` (weight decay and learning-rate scales)."""
    return weight_decay_groups(
        model,
        recipe["weight_decay"],
        recipe.get("weight_decay_on", "weights"),
        recipe.get("lr_scale_bias_bn", 1.0),
    )


# --- the core every training path shares (the loop itself is nondet.training.loop) -----------------------


class Schedule:
    """Steps, learning rate, snapshot and evaluation points of one recipe on ``n`` examples."""

    def __init__(self, recipe: dict, n: int):
        self.n, self.batch_size = n, recipe["batch_size"]
        self.epochs, self.cycles, self.peak = recipe["epochs"], recipe["cycles"], recipe["lr"]
        self.eval_every = recipe["eval_every"]
        self.steps_per_epoch = math.ceil(n / self.batch_size)
        self.total = self.steps_per_epoch * self.epochs
        self.warmup = self.steps_per_epoch * recipe["warmup_epochs"]
        self.cycle_steps = self.total // self.cycles
        name = recipe.get("schedule", "cosine_restart")
        if name not in SCHEDULES:
            raise ValueError(f"unknown training.schedule {name!r}; known: {', '.join(SCHEDULES)}")
        self._lr = SCHEDULES[name]

    def lr(self, step: int) -> float:
        return self._lr(step, self.total, self.peak, self.warmup, self.cycles)

    def snapshot_due(self, steps_done: int) -> bool:
        """After this many steps a cycle ends (lr 0): the snapshot ensembles' members."""
        return self.cycles > 1 and steps_done % self.cycle_steps == 0

    def eval_due(self, epochs_done: int) -> bool:
        every = self.eval_every
        return bool(every) and (epochs_done % every == 0 or epochs_done == self.epochs)


class ReplicaDraws:
    """Every random draw of one replica's training, each from its own source's generator and
    keyed by (seed, epoch, batch or example index), so a resumed or vectorised run draws exactly
    what a sequential uninterrupted one does: the data order, the CPU kernels stand-in's
    within-batch permutation, the augmentation and the dropout masks of every example."""

    def __init__(self, seeds: ReplicaSeeds, recipe: dict, n: int, device, dropout_ps=()):
        self.seeds, self.batch_size, self.device = seeds, recipe["batch_size"], device
        self.standin = (not seeds.deterministic) and device.type == "cpu" and recipe["kernels_cpu_standin"]
        # the data source: the examples this replica trains on (None: all n, in their order);
        # augmentation and masks stay keyed by the example's own index among all n
        index = replica_index(seeds.data, n, recipe.get("resample"))
        self.index = None if index is None else torch.from_numpy(index).to(device)
        self.n = n if index is None else len(index)  # examples per epoch
        self.augment = Augmenter(recipe["augment"], seeds.augment, n, recipe["augment_size"])
        # the authors' coupling (recipe augment_keyed_by: position): an example's augmentation
        # follows its position in the epoch's order, so a new shuffle also re-augments it
        self.by_position = recipe.get("augment_keyed_by", "example") == "position"
        self.masks = [ExampleMasks(seeds.dropout, layer, n, p) for layer, p in enumerate(dropout_ps)]

    #: training sets up to this size (bytes) are augmented whole once per epoch, batches then
    #: copy their rows (a shift or crop of an example depends on its (seed, epoch, index) alone,
    #: so this is bitwise the per-batch augmentation, without its per-step cost); larger ones
    #: (CIFAR-10: 600 MB) are augmented batch by batch
    WHOLE_EPOCH_BYTES = 64 << 20

    def _augmented(self, epoch: int, data: Dataset) -> torch.Tensor | None:
        x = data.x_train
        if x.numel() * x.element_size() > self.WHOLE_EPOCH_BYTES:
            return None
        key = (epoch, id(x))
        if getattr(self, "_whole", (None,))[0] != key:
            self.augment.fill = data.pad_fill
            every = torch.arange(len(x), device=x.device)
            self._whole = (key, self.augment(x, every, epoch))
        return self._whole[1]

    def order(self, epoch: int) -> torch.Tensor:
        """Example indices of the epoch in training order (a permutation of the resample)."""
        g = torch_generator(derive_seed(self.seeds.shuffle, epoch))
        perm = torch.randperm(self.n, generator=g).to(self.device)
        return perm if self.index is None else self.index[perm]

    def batch(self, order: torch.Tensor, epoch: int, b: int, data: Dataset):
        """(index, x, y) of batch ``b``; dropout masks are selected for its rows."""
        index = order[b * self.batch_size : (b + 1) * self.batch_size]
        position = torch.arange(b * self.batch_size, b * self.batch_size + len(index), device=self.device)
        if self.standin:
            g = torch_generator(derive_seed(self.seeds.kernels, epoch, b))
            perm = torch.randperm(len(index), generator=g).to(self.device)
            index, position = index[perm], position[perm]  # the stand-in moves no augmentation
        whole = None if self.by_position else self._augmented(epoch, data)
        if whole is not None:  # a copy of the rows: bitwise what augmenting the batch gives
            x = whole[index]
        else:
            self.augment.fill = data.pad_fill
            x = self.augment(data.x_train[index], position if self.by_position else index, epoch)
        for m in self.masks:
            m.select(epoch, index)
        return index, x, data.y_train[index]


def dropout_layers(model) -> list[SeededDropout]:
    """Active dropout layers in module order (their rank keys their masks)."""
    return [m for m in model.modules() if isinstance(m, SeededDropout) and m.p > 0]


def replica_result(state, curve: Curve, snapshots, flipped, diverged, seeds, device, recipe, seconds, averaged=None):
    """What a trained replica returns; ``averaged``: {kind: averaged weights} (recipe.averages)."""
    return {
        "state": state,
        "averaged": averaged or {},
        "curve": curve.arrays(),
        "snapshots": snapshots,
        "bitflip": flipped,
        "diverged": bool(diverged),
        "kernels_mode": kernels_mode(seeds, device, recipe["kernels_cpu_standin"]),
        "seconds": seconds,
    }


def build_replica(model_spec, recipe, seeds: ReplicaSeeds, data: Dataset, device):
    """The replica's initial model (from its init generator) and its one-ulp flip, if any."""
    model = build_model(
        model_spec,
        data.input_shape,
        data.num_classes,
        torch_generator(seeds.init),
        device,
        init=recipe.get("init", "pytorch"),
    )
    flipped = {}
    if seeds.bitflip is not None:
        flipped = apply_bitflip(model, seeds.bitflip, recipe.get("bitflip_tensor"))
    return model, flipped


# --- sequential training (nondet.training.loop.SequentialStep) -------------------------------------------


def train_replica(
    run: TrainRun, seeds: ReplicaSeeds, data: Dataset, book: Bookkeeping = Bookkeeping(), record_steps=()
) -> dict:
    """Train one replica of ``run`` (model spec, recipe, device; nondet.training.recipe.TrainRun)
    from its ``seeds`` on ``data``; return its final weights, training curve and what was perturbed.

    ``run.recipe`` keys: epochs, batch_size, lr, momentum, nesterov, weight_decay, warmup_epochs,
    cycles (snapshot cycles; 1 = plain cosine), augment ("none"/"shift"/"crop_flip"),
    augment_size, kernels_cpu_standin, eval_every (epochs; 0 = never), and optionally bf16
    (autocast to bfloat16), channels_last (image models) and bitflip_tensor (where the one-ulp
    flip lands: None = any conv/linear weight, or a parameter name).
    Snapshots (weights at the end of every cycle) are returned when cycles > 1.
    ``averages`` (optional recipe key): weight averages kept while training, {"ema": {"decay"},
    "swa": {"start"}} (nondet.training.averaging), returned under ``averaged``; they change nothing else.
    ``book`` (nondet.training.recipe.Bookkeeping): the log lines' label and sink, and the
    checkpoint: a path for resumable state (model, optimiser, schedule position, curve,
    snapshots), written atomically every ``book.checkpoint_every`` epochs; if it exists when
    training starts, training resumes from it. Every generator is re-derived from (seed, epoch,
    step), so a resumed run ends bitwise identical to an uninterrupted one (with deterministic kernels).
    ``record_steps``: after how many optimizer steps (0 = the initial model) to record the flat
    parameter vector and the test logits, for twin-divergence curves; recording changes nothing.
    """
    started = time.perf_counter()
    model_spec, recipe, device = run.model_spec, run.recipe, run.device
    set_kernel_mode(seeds.deterministic, device)
    model, flipped = build_replica(model_spec, recipe, seeds, data, device)
    # Optional, off for the paper's fp32 protocol; both are part of the recipe, so provenance.
    bf16 = bool(recipe.get("bf16", False))
    channels_last = bool(recipe.get("channels_last", False)) and data.x_train.dim() == 4
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    opt = SGD(
        param_groups(model, recipe),
        lr=recipe["lr"],
        momentum=recipe["momentum"],
        nesterov=recipe["nesterov"],
    )
    layers = dropout_layers(model)
    draws = ReplicaDraws(seeds, recipe, len(data.y_train), device, [m.p for m in layers])
    sched = Schedule(recipe, draws.n)  # draws.n: the training set, or this replica's resample of it
    for m, masks in zip(layers, draws.masks):
        m.masks = masks
    stepper = SequentialStep(model, opt, seeds.dropout, device, data.x_test, bf16, channels_last, record_steps)
    averages = Averages(
        recipe.get("averages"), sched.epochs, lambda: {**dict(model.named_parameters()), **dict(model.named_buffers())}
    )
    resume_key = {
        "seeds": seeds.as_dict(),
        "recipe": recipe,
        "model": model_spec,
        "accelerator": accelerator_name(device),
    }
    curves, snapshots, diverged = run_epochs(stepper, sched, [draws], data, book, resume_key, averages)
    averaged = (
        averages.finish(False, model_spec, data, device, sched.batch_size, [draws.index], bf16)[0] if averages else None
    )
    result = replica_result(
        state_to_numpy(model),
        curves[0],
        snapshots[0],
        flipped,
        diverged[0],
        seeds,
        device,
        recipe,
        time.perf_counter() - started,
        averaged,
    )
    records = stepper.records
    result["model"] = model
    result["records"] = {
        "steps": np.array([r[0] for r in records], dtype=np.int64),
        "params": np.stack([r[1] for r in records]) if records else np.zeros((0, 0)),
        "test_logits": (torch.stack([r[2] for r in records]).cpu().numpy() if records else np.zeros(0)),
    }
    return result
