"""Dropout whose masks are a function of (dropout seed, epoch, example index, layer) alone.

Masks drawn in batch-row order (one generator per step) would hand an example a new mask whenever
the data order changes, so a ``shuffle`` condition would vary two sources. Here, as for data
augmentation (:mod:`nondet.training.augment`), one table of masks per (epoch, layer) is drawn for every
example of the training set from its own generator, and a batch looks its rows up by example
index. A new data order, or the CPU ``kernels`` stand-in's within-batch permutation, then changes
only which examples share a batch, never an example's mask.

The table is drawn on the CPU (so CPU and CUDA runs draw the same masks) and kept as booleans on
the training device: ``n_train x per-example shape`` bytes per dropout layer, e.g. 128 kB for the
default CNN on mnist1d and 3.2 MB for a ResNet's pooled features on CIFAR-10.
"""

from __future__ import annotations

import torch
from torch import nn

from nondet.seeds import derive_seed, torch_generator


class ExampleMasks:
    """Keep-masks of one dropout layer for every training example, redrawn each epoch.

    The training loop calls :meth:`select` before each step with the epoch and the dataset
    indices of the batch rows (in the order they are fed); :meth:`lookup` then returns the rows'
    masks for a per-example activation shape.
    """

    def __init__(self, seed: int, layer: int, n: int, p: float):
        self.seed, self.layer, self.n, self.keep = int(seed), int(layer), int(n), 1.0 - float(p)
        self.epoch: int | None = None
        self.index: torch.Tensor | None = None
        self._key, self._table = None, None

    def select(self, epoch: int, index: torch.Tensor) -> None:
        self.epoch, self.index = int(epoch), index

    def table(self, shape, device) -> torch.Tensor:
        """Boolean keep-mask of every training example in the selected epoch, (n, *shape)."""
        key = (self.epoch, tuple(shape), str(device))
        if self._key != key:
            g = torch_generator(derive_seed(self.seed, self.epoch, self.layer))
            draws = torch.empty((self.n, *shape)).bernoulli_(self.keep, generator=g)
            self._table, self._key = draws.to(device=device, dtype=torch.bool), key
        return self._table

    def lookup(self, shape, device, dtype=torch.float32) -> torch.Tensor:
        if self.epoch is None or self.index is None:
            raise RuntimeError("ExampleMasks.lookup before select(epoch, index)")
        return self.table(shape, device)[self.index.to(device)].to(dtype)


class SeededDropout(nn.Module):
    """Dropout that draws nothing itself: its masks come from ``self.masks`` (an
    :class:`ExampleMasks` set by the training loop), or from ``external_mask`` (vectorised
    training passes each replica's masks in through ``torch.func.functional_call``)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)
        self.masks: ExampleMasks | None = None
        self.register_buffer("external_mask", None, persistent=False)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        if self.external_mask is not None:
            return x * self.external_mask / keep
        if self.masks is None:
            raise RuntimeError("SeededDropout needs example masks in training mode (no global RNG)")
        return x * self.masks.lookup(x.shape[1:], x.device, x.dtype) / keep


def attach_masks(model: nn.Module, seed: int, n: int) -> list[ExampleMasks]:
    """Give every active dropout layer of ``model`` its masks (layer = its rank in module order)."""
    out = []
    layers = [m for m in model.modules() if isinstance(m, SeededDropout) and m.p > 0]
    for layer, m in enumerate(layers):
        m.masks = ExampleMasks(seed, layer, n, m.p)
        out.append(m.masks)
    return out
