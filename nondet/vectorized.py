"""Several replicas of one condition trained together, vectorised with torch.func.

Parameters and buffers of K replicas are stacked and one ``vmap(grad(functional_call))`` step
updates all of them; BatchNorm running statistics update in place in the stacked buffers.
Everything else is the core :mod:`nondet.training` shares with sequential training: the schedule,
each replica's draws (initialisation and bit flip, data order, augmentation, dropout masks looked
up by example index outside vmap and passed in as ``external_mask``, the CPU kernels stand-in),
the curve, checkpoints and the result. Only the step differs.

Batched kernels sum in a different order than per-model kernels, so a vectorised replica is not
bitwise identical to the same replica trained alone for convolutions (the paper's point: any such
difference grows); for matmul-only models it is, and replicas of ``control`` trained together are
identical to each other. Conditions whose source is the kernels are never vmapped on CUDA
(nondet.torch_stages.training_path): the K replicas of a chunk would share one kernel choice. On a
CPU, ``wide=True`` replaces the vmap step by nondet.stacked's wide model (the built-in cnn1d).
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from . import stacked
from .optim import SGD
from .seeds import ReplicaSeeds
from .training import (
    Curve,
    ReplicaDraws,
    Schedule,
    accelerator_name,
    build_replica,
    dropout_layers,
    load_checkpoint,
    param_groups,
    replica_result,
    save_checkpoint,
    set_kernel_mode,
    set_lr,
)


def _finite_mean(values) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _dropout_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple]:
    """Per-example input shape of every active dropout module, in module order (one forward)."""
    layers = {id(m) for m in dropout_layers(model)}
    shapes, hooks = {}, []
    for name, m in model.named_modules():
        if id(m) in layers:
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


def _stacked_groups(model: nn.Module, params: dict, recipe: dict) -> list[dict]:
    """The sequential loop's parameter groups (nondet.training.param_groups), with each
    parameter replaced by its stack over replicas."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [
        {**{k: v for k, v in g.items() if k != "params"},
         "params": [params[names[id(p)]] for p in g["params"]]}
        for g in param_groups(model, recipe)
    ]  # fmt: skip


def train_replicas_vectorized(
    model_spec: dict,
    recipe: dict,
    seeds_list: list[ReplicaSeeds],
    data,
    device: torch.device,
    label: str = "",
    log=print,
    checkpoint=None,
    checkpoint_every: int = 0,
    eval_batch_size: int = 1000,
    wide: bool = False,
) -> list[dict]:
    """Train ``len(seeds_list)`` replicas at once; returns one result per replica as
    :func:`nondet.training.train_replica` does (without ``model`` and ``records``).

    ``checkpoint``: one file for the whole chunk (stacked weights, optimiser state, schedule
    position, curves, snapshots), written atomically every ``checkpoint_every`` epochs and
    resumed from, bitwise, as in sequential training. Test-set evaluation runs in batches of
    ``eval_batch_size`` examples for all replicas at once.
    ``wide``: instead of vmap, compute the replicas as one wide model (nondet.stacked, the
    built-in ``cnn1d`` only), the faster path on a CPU.
    """
    started = time.perf_counter()
    if recipe.get("bf16") or recipe.get("channels_last"):
        raise ValueError("vectorised training supports the fp32 protocol only (no bf16/channels_last)")
    deterministic = {s.deterministic for s in seeds_list}
    if len(deterministic) != 1:
        raise ValueError("vectorised replicas must share the kernel mode (one condition)")
    if wide and not stacked.supports(model_spec):
        raise ValueError(f"the wide path implements the built-in cnn1d only, not {model_spec['arch']!r}")
    set_kernel_mode(deterministic.pop(), device)
    k, n = len(seeds_list), len(data.y_train)

    built = [build_replica(model_spec, recipe, s, data, device) for s in seeds_list]
    models, flips = [m for m, _ in built], [f for _, f in built]
    drop_shapes = _dropout_shapes(models[0], data.x_train[:1])
    ps = [models[0].get_submodule(name).p for name in drop_shapes]
    draws = [ReplicaDraws(s, recipe, n, device, ps) for s in seeds_list]
    if len({d.n for d in draws}) != 1:
        raise ValueError("vectorised replicas must train on equally many examples (one data_resampling)")
    n = draws[0].n  # examples per epoch: the training set, or each replica's resample of it
    params = {
        name: torch.stack([m.get_parameter(name).detach() for m in models]) for name, _ in models[0].named_parameters()
    }
    buffers = {name: torch.stack([m.get_buffer(name) for m in models]) for name, _ in models[0].named_buffers()}
    opt = SGD(
        _stacked_groups(models[0], params, recipe),
        lr=recipe["lr"],
        momentum=recipe["momentum"],
        nesterov=recipe["nesterov"],
    )
    base = copy.deepcopy(models[0]).to("meta")
    del models, built

    def loss_fn(p, b, masks, x, y):
        out = functional_call(base, {**p, **b, **masks}, (x,))
        return F.cross_entropy(out, y), out

    vmapped = vmap(grad_and_value(loss_fn, has_aux=True))

    def step_fn(params, buffers, masks, x, y):
        """Each replica's gradients, loss and logits for its batch ``x[r]``, ``y[r]``."""
        if not wide:
            return vmapped(params, buffers, masks, x, y)
        out = stacked.forward(params, buffers, masks, x, True, model_spec)
        loss = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(k, -1).mean(1)
        grads = torch.autograd.grad(loss.sum(), list(params.values()))
        return dict(zip(params, grads)), (loss.detach(), out.detach())

    if wide:
        for p in params.values():
            p.requires_grad_(True)

    def predict_all(x):
        """Logits of every replica on ``x``, (k, len(x), classes), in batches like predict."""
        if wide:
            return torch.cat([
                stacked.forward(params, buffers, None, x[i : i + eval_batch_size].expand(k, -1, -1, -1), False,
                                model_spec)
                for i in range(0, len(x), eval_batch_size)
            ], dim=1)  # fmt: skip
        base.eval()
        out = torch.cat(
            [
                vmap(lambda p, b: functional_call(base, {**p, **b}, (x[i : i + eval_batch_size],)))(params, buffers)
                for i in range(0, len(x), eval_batch_size)
            ],
            dim=1,
        )
        base.train()
        return out

    sched = Schedule(recipe, n)
    curves = [Curve() for _ in range(k)]
    snapshots = [[] for _ in range(k)]
    diverged = np.zeros(k, dtype=bool)
    start_epoch, step = 0, 0
    resume_key = {"seeds": [s.as_dict() for s in seeds_list], "recipe": recipe, "model": model_spec,
                  "accelerator": accelerator_name(device)}  # fmt: skip
    state = load_checkpoint(checkpoint, resume_key, device, log, label)
    if state is not None:
        with torch.no_grad():
            for name, value in state["params"].items():
                params[name].copy_(value)
            for name, value in state["buffers"].items():
                buffers[name].copy_(value)
        opt.load_state_dict(state["optimizer"])
        start_epoch, step, diverged = state["epoch"], state["step"], state["diverged"]
        curves, snapshots = [Curve(c) for c in state["curves"]], state["snapshots"]
        if diverged.all():
            start_epoch = sched.epochs

    def replica_state(r):
        return {
            **{name: p[r].detach().cpu().numpy().copy() for name, p in params.items()},
            **{name: b[r].cpu().numpy().copy() for name, b in buffers.items()},
        }

    def save(epochs_done):
        save_checkpoint(
            checkpoint, resume_key, params=params, buffers=buffers, optimizer=opt.state_dict(),
            epoch=epochs_done, step=step, curves=[c.values for c in curves], snapshots=snapshots,
            diverged=diverged,
        )  # fmt: skip

    for epoch in range(start_epoch, sched.epochs):
        t0 = time.perf_counter()
        orders = [d.order(epoch) for d in draws]
        loss_sum = torch.zeros(k, device=device)
        correct = torch.zeros(k, device=device)
        lr = 0.0
        for b in range(sched.steps_per_epoch):
            xs, ys, masks = [], [], {name: [] for name in drop_shapes}
            for d, order in zip(draws, orders):
                _, x, y = d.batch(order, epoch, b, data)
                xs.append(x)
                ys.append(y)
                for (name, shape), m in zip(drop_shapes.items(), d.masks):
                    masks[name].append(m.lookup(shape, device))
            masks = {f"{name}.external_mask": torch.stack(v) for name, v in masks.items()}
            x, y = torch.stack(xs), torch.stack(ys)
            lr = sched.lr(step)
            set_lr(opt, lr)
            grads, (loss, out) = step_fn(params, buffers, masks, x, y)
            for name, p in params.items():
                p.grad = grads[name]
            opt.step()
            loss_sum += loss.detach() * y.shape[1]
            correct += (out.argmax(-1) == y).sum(-1)
            step += 1
            if sched.snapshot_due(step):
                for r in range(k):
                    snapshots[r].append(replica_state(r))
        train_loss = (loss_sum / n).cpu().numpy()
        train_acc = (100.0 * correct / n).cpu().numpy()
        test_loss = test_acc = np.full(k, np.nan)
        if sched.eval_due(epoch + 1):
            with torch.no_grad():
                z = predict_all(data.x_test)
                test_loss = torch.stack([F.cross_entropy(z[r], data.y_test) for r in range(k)]).cpu().numpy()
                test_acc = (100.0 * (z.argmax(-1) == data.y_test).float().mean(-1)).cpu().numpy()
        for r in range(k):
            curves[r].add(epoch + 1, lr, train_loss[r], train_acc[r], test_loss[r], test_acc[r])
        diverged |= ~np.isfinite(train_loss)
        log(
            f"{label} epoch {epoch + 1}/{sched.epochs} ({k} replicas vectorised) loss "
            f"{_finite_mean(train_loss):.4f} test_acc {_finite_mean(test_acc):.1f}% lr {lr:.3g} "
            f"({time.perf_counter() - t0:.2f}s)"
        )
        if diverged.all():
            log(f"{label} DIVERGED: every replica's training loss is NaN/inf; stopping")
            break
        if checkpoint is not None and checkpoint_every and (epoch + 1) % checkpoint_every == 0:
            save(epoch + 1)

    if checkpoint is not None and start_epoch < sched.epochs:
        save(len(curves[0]))  # a finished chunk is skipped on resume
    seconds = (time.perf_counter() - started) / k
    return [
        replica_result(
            replica_state(r), curves[r], snapshots[r], flips[r], diverged[r], seeds_list[r], device, recipe, seconds
        )  # fmt: skip
        for r in range(k)
    ]
