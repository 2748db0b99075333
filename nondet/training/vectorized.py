"""Several replicas of one condition trained together, vectorised with torch.func.

Parameters and buffers of K replicas are stacked and one ``vmap(grad(functional_call))`` step
updates all of them; BatchNorm running statistics update in place in the stacked buffers.
Everything else is shared with sequential training: the schedule and each replica's draws
(initialisation and bit flip, data order, augmentation, dropout masks looked up by example index
outside vmap and passed in as ``external_mask``, the CPU kernels stand-in) from :mod:`nondet.training.replica`,
and the epoch/batch loop, loss, evaluation, curves and checkpoints of :mod:`nondet.training.loop`, whose
:class:`~nondet.training.loop.StackedStep` is the step. Only the step differs.

Batched kernels sum in a different order than per-model kernels, so a vectorised replica is not
bitwise identical to the same replica trained alone for convolutions (the paper's point: any such
difference grows); for matmul-only models it is, and replicas of ``control`` trained together are
identical to each other. Conditions whose source is the kernels are never vmapped on CUDA
(nondet.workflow.torch_stages.vectorization): the K replicas of a chunk would share one kernel choice. On a
CPU, ``wide=True`` replaces the vmap step by nondet.training.wide's wide model (the built-in cnn1d).
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from nondet.seeds import ReplicaSeeds
from nondet.training.averaging import Averages
from nondet.training.loop import StackedStep, run_epochs
from nondet.training.optim import SGD
from nondet.training.recipe import Bookkeeping, TrainRun
from nondet.training.replica import (
    ReplicaDraws,
    Schedule,
    accelerator_name,
    build_replica,
    dropout_layers,
    param_groups,
    replica_result,
    set_kernel_mode,
)
from nondet.training.wide import supports as wide_supports


def _dropout_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple]:
    """Per-example input shape of every active dropout module, in module order (one forward)."""
    layers = {id(m) for m in dropout_layers(model)}
    shapes, hooks = {}, []
    for name, m in model.named_modules():
        if id(m) in layers:
            hooks.append(
                m.register_forward_hook(
                    lambda mod, inp, out, name=name: shapes.__setitem__(name, tuple(inp[0].shape[1:]))
                )
            )
    with torch.no_grad():
        model.eval()
        model(x)
        model.train()
    for h in hooks:
        h.remove()
    return shapes


def _stacked_groups(model: nn.Module, params: dict, recipe: dict) -> list[dict]:
    """The sequential loop's parameter groups (nondet.training.replica.param_groups), with each
    parameter replaced by its stack over replicas."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [
        {**{k: v for k, v in g.items() if k != "params"}, "params": [params[names[id(p)]] for p in g["params"]]}
        for g in param_groups(model, recipe)
    ]


def train_replicas_vectorized(
    run: TrainRun,
    seeds_list: list[ReplicaSeeds],
    data,
    book: Bookkeeping = Bookkeeping(),
    *,
    wide: bool = False,
    eval_batch_size: int = 1000,
) -> list[dict]:
    """Train ``len(seeds_list)`` replicas of ``run`` (nondet.training.recipe.TrainRun) at once;
    returns one result per replica as :func:`nondet.training.replica.train_replica` does (without
    ``model`` and ``records``).

    ``book.checkpoint``: one file for the whole chunk (stacked weights, optimiser state, schedule
    position, curves, snapshots), written atomically every ``book.checkpoint_every`` epochs and
    resumed from, bitwise, as in sequential training. Test-set evaluation runs in batches of
    ``eval_batch_size`` examples for all replicas at once.
    ``wide``: instead of vmap, compute the replicas as one wide model (nondet.training.wide, the
    built-in ``cnn1d`` only), the faster path on a CPU.
    """
    started = time.perf_counter()
    model_spec, recipe, device = run.model_spec, run.recipe, run.device
    if recipe.get("bf16") or recipe.get("channels_last"):
        raise ValueError("vectorised training supports the fp32 protocol only (no bf16/channels_last)")
    deterministic = {s.deterministic for s in seeds_list}
    if len(deterministic) != 1:
        raise ValueError("vectorised replicas must share the kernel mode (one condition)")
    if wide and not wide_supports(model_spec):
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
    stepper = StackedStep(base, params, buffers, opt, drop_shapes, model_spec, device, wide, eval_batch_size)
    resume_key = {
        "seeds": [s.as_dict() for s in seeds_list],
        "recipe": recipe,
        "model": model_spec,
        "accelerator": accelerator_name(device),
    }
    sched = Schedule(recipe, n)
    # weight averages (recipe.averages) of the stacked tensors, element by element as for one replica
    averages = Averages(recipe.get("averages"), sched.epochs, lambda: {**params, **buffers})
    curves, snapshots, diverged = run_epochs(stepper, sched, draws, data, book, resume_key, averages)
    averaged = [None] * k
    if averages:
        averaged = averages.finish(True, model_spec, data, device, sched.batch_size, [d.index for d in draws])
    seconds = (time.perf_counter() - started) / k
    per_replica = zip(curves, snapshots, flips, diverged, seeds_list, averaged)
    return [
        replica_result(stepper.replica_state(r), curve, snaps, flip, div, seeds, device, recipe, seconds, avg)
        for r, (curve, snaps, flip, div, seeds, avg) in enumerate(per_replica)
    ]
