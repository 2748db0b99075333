"""The arguments of a training call, in two kinds: what is trained and how (:class:`TrainRun`:
every number of a run follows from it and the replica's seeds) and how the call reports and
survives a kill (:class:`Bookkeeping`: changes no number).

``train_replica(TrainRun(spec, recipe, device), seeds, data, Bookkeeping(label, log))`` trains one
replica; ``train_replicas_vectorized(run, seeds_list, data, book)`` trains K together. The two
objects are frozen: a training function reads them and never changes them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TrainRun:
    """What is trained and how.

    ``model_spec``: the model's entry of the config (``arch`` and its parameters, or a user model's
    import path). ``recipe``: the training recipe (keys: epochs, batch_size, lr, momentum,
    nesterov, weight_decay, warmup_epochs, cycles, augment, augment_size, kernels_cpu_standin,
    eval_every, and optionally schedule, init, resample, bf16, channels_last, bitflip_tensor,
    averages; see :func:`nondet.training.replica.train_replica`). ``device``: where it trains.
    """

    model_spec: dict
    recipe: dict
    device: torch.device


@dataclass(frozen=True)
class Bookkeeping:
    """How a training call reports and resumes; nothing here changes a number of the run.

    ``label``: the prefix of its log lines; ``log``: where they go (one string each).
    ``checkpoint``: a path for resumable state, written atomically every ``checkpoint_every``
    epochs (0: never) and resumed from if it exists when training starts (None: no checkpoint).
    """

    label: str = ""
    log: Callable[[str], object] = print
    checkpoint: str | os.PathLike | None = None
    checkpoint_every: int = 0
