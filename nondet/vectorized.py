"""Several replicas of one condition trained together, vectorised with torch.func.

Parameters and buffers of K replicas are stacked and one ``vmap(grad(functional_call))`` step
updates all of them; BatchNorm running statistics update in place in the stacked buffers. Every
replica keeps its own sources of randomness, drawn exactly as in :func:`train_replica`: its own
initialisation and bit flip, data order, augmentation, dropout masks (looked up outside vmap by example
index, as in sequential training, and passed in as ``external_mask``) and CPU kernels stand-in permutation.

Batched kernels sum in a different order than per-model kernels, so a vectorised replica is not
bitwise identical to the same replica trained alone (the paper's point: any such difference
grows); replicas of ``control`` trained together are identical to each other.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from .augment import Augmenter
from .bitflip import apply_bitflip
from .dropout import ExampleMasks, SeededDropout
from .models import build_model
from .seeds import ReplicaSeeds, derive_seed, torch_generator
from .training import kernels_mode, lr_at, set_kernel_mode


def _finite_mean(values) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _decayed(model: nn.Module) -> set[str]:
    """Names of conv/linear weights (the only parameters with weight decay)."""
    return {
        f"{mod}.weight" if mod else "weight"
        for mod, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))
    }


def _dropout_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple]:
    """Per-example input shape of every active dropout module (from one forward pass)."""
    shapes, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, SeededDropout) and m.p > 0:
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: shapes.__setitem__(name, tuple(inp[0].shape[1:]))
            ))  # fmt: skip
    with torch.no_grad():
        model.eval()
        model(x)
        model.train()
    for h in hooks:
        h.remove()
    return shapes


def train_replicas_vectorized(
    model_spec: dict,
    recipe: dict,
    seeds_list: list[ReplicaSeeds],
    data,
    device: torch.device,
    label: str = "",
    log=print,
) -> list[dict]:
    """Train ``len(seeds_list)`` replicas at once; returns one result per replica as
    :func:`nondet.training.train_replica` does (without ``model`` and ``records``)."""
    started = time.perf_counter()
    if recipe.get("bf16") or recipe.get("channels_last"):
        raise ValueError("vectorised training supports the fp32 protocol only (no bf16/channels_last)")
    deterministic = {s.deterministic for s in seeds_list}
    if len(deterministic) != 1:
        raise ValueError("vectorised replicas must share the kernel mode (one condition)")
    deterministic = deterministic.pop()
    set_kernel_mode(deterministic, device)
    standin = (not deterministic) and device.type == "cpu" and recipe["kernels_cpu_standin"]
    k = len(seeds_list)

    models, flips = [], []
    for s in seeds_list:
        m = build_model(
            model_spec, data.input_shape, data.num_classes, torch_generator(s.init), device
        )
        flip = recipe.get("bitflip_tensor")
        flips.append(apply_bitflip(m, s.bitflip, flip) if s.bitflip is not None else {})
        models.append(m)
    drop_shapes = _dropout_shapes(models[0], data.x_train[:1])
    # the same masks as sequential training: per (seed, epoch, example index, layer rank)
    example_masks = [
        {name: ExampleMasks(s.dropout, layer, len(data.y_train), models[0].get_submodule(name).p)
         for layer, name in enumerate(drop_shapes)}
        for s in seeds_list
    ]  # fmt: skip
    base = copy.deepcopy(models[0]).to("meta")
    params = {
        n: torch.stack([m.get_parameter(n).detach() for m in models])
        for n, _ in models[0].named_parameters()
    }
    buffers = {
        n: torch.stack([m.get_buffer(n) for m in models]) for n, _ in models[0].named_buffers()
    }
    del models
    decay = _decayed(base)
    opt = torch.optim.SGD(
        [
            {"params": [p for n, p in params.items() if n in decay],
             "weight_decay": recipe["weight_decay"]},
            {"params": [p for n, p in params.items() if n not in decay], "weight_decay": 0.0},
        ],
        lr=recipe["lr"],
        momentum=recipe["momentum"],
        nesterov=recipe["nesterov"],
    )  # fmt: skip

    def loss_fn(p, b, masks, x, y):
        out = functional_call(base, {**p, **b, **masks}, (x,))
        return F.cross_entropy(out, y), out

    step_fn = vmap(grad_and_value(loss_fn, has_aux=True))

    def predict_all(x):
        base.eval()
        out = vmap(lambda p, b: functional_call(base, {**p, **b}, (x,)))(params, buffers)
        base.train()
        return out

    n, bs, epochs, cycles = len(data.y_train), recipe["batch_size"], recipe["epochs"], recipe["cycles"]
    steps_per_epoch = math.ceil(n / bs)
    total = steps_per_epoch * epochs
    warmup = steps_per_epoch * recipe["warmup_epochs"]
    cycle_steps = total // cycles
    augmenters = [Augmenter(recipe["augment"], s.augment, n, recipe["augment_size"]) for s in seeds_list]
    curves = [{c: [] for c in ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc")}
              for _ in range(k)]  # fmt: skip
    snapshots = [[] for _ in range(k)]
    diverged = np.zeros(k, dtype=bool)
    step = 0

    def state(r):
        return {
            **{n: p[r].detach().cpu().numpy().copy() for n, p in params.items()},
            **{n: b[r].cpu().numpy().copy() for n, b in buffers.items()},
        }

    for epoch in range(epochs):
        t0 = time.perf_counter()
        orders = [
            torch.randperm(n, generator=torch_generator(derive_seed(s.shuffle, epoch))).to(device)
            for s in seeds_list
        ]
        loss_sum = torch.zeros(k, device=device)
        correct = torch.zeros(k, device=device)
        lr = 0.0
        for b in range(steps_per_epoch):
            xs, ys, masks = [], [], {name: [] for name in drop_shapes}
            for r, s in enumerate(seeds_list):
                index = orders[r][b * bs : (b + 1) * bs]
                if standin:
                    perm = torch.randperm(
                        len(index), generator=torch_generator(derive_seed(s.kernels, epoch, b))
                    ).to(device)
                    index = index[perm]
                xs.append(augmenters[r](data.x_train[index], index, epoch))
                ys.append(data.y_train[index])
                for name, shape in drop_shapes.items():
                    example_masks[r][name].select(epoch, index)
                    masks[name].append(example_masks[r][name].lookup(shape, device))
            masks = {f"{name}.external_mask": torch.stack(v) for name, v in masks.items()}
            x, y = torch.stack(xs), torch.stack(ys)
            lr = lr_at(step, total, recipe["lr"], warmup, cycles)
            for group in opt.param_groups:
                group["lr"] = lr
            grads, (loss, out) = step_fn(params, buffers, masks, x, y)
            for name, p in params.items():
                p.grad = grads[name]
            opt.step()
            loss_sum += loss.detach() * y.shape[1]
            correct += (out.argmax(-1) == y).sum(-1)
            step += 1
            if cycles > 1 and step % cycle_steps == 0:
                for r in range(k):
                    snapshots[r].append(state(r))
        train_loss = (loss_sum / n).cpu().numpy()
        train_acc = (100.0 * correct / n).cpu().numpy()
        every = recipe["eval_every"]
        test_loss = test_acc = np.full(k, np.nan)
        if every and ((epoch + 1) % every == 0 or epoch + 1 == epochs):
            with torch.no_grad():
                z = predict_all(data.x_test)
                test_loss = torch.stack(
                    [F.cross_entropy(z[r], data.y_test) for r in range(k)]
                ).cpu().numpy()
                test_acc = (100.0 * (z.argmax(-1) == data.y_test).float().mean(-1)).cpu().numpy()
        for r in range(k):
            c = curves[r]
            c["epoch"].append(epoch + 1)
            c["lr"].append(lr)
            c["train_loss"].append(float(train_loss[r]))
            c["train_acc"].append(float(train_acc[r]))
            c["test_loss"].append(float(test_loss[r]))
            c["test_acc"].append(float(test_acc[r]))
        diverged |= ~np.isfinite(train_loss)
        log(
            f"{label} epoch {epoch + 1}/{epochs} ({k} replicas vectorised) loss "
            f"{_finite_mean(train_loss):.4f} test_acc {_finite_mean(test_acc):.1f}% lr {lr:.3g} "
            f"({time.perf_counter() - t0:.2f}s)"
        )
        if diverged.all():
            log(f"{label} DIVERGED: every replica's training loss is NaN/inf; stopping")
            break

    seconds = (time.perf_counter() - started) / k
    return [
        {
            "state": state(r),
            "curve": {c: np.asarray(v, dtype=np.float64) for c, v in curves[r].items()},
            "snapshots": snapshots[r],
            "bitflip": flips[r],
            "diverged": bool(diverged[r]),
            "kernels_mode": kernels_mode(seeds_list[r], device, recipe["kernels_cpu_standin"]),
            "seconds": seconds,
        }
        for r in range(k)
    ]
