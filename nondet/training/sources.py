"""One seed per source inside a researcher's own training script (plain PyTorch).

Framework helpers take ONE global seed (``torch.manual_seed``, Lightning's ``seed_everything``),
so they cannot vary one source while holding the others. :class:`Sources` hands a script the
seed of each source and, for each, a few lines that draw from that source alone:

===========  ==============================================================================
source       what the script does
===========  ==============================================================================
init         ``with src.init(): model = Net()`` (the global RNGs forked and seeded from init)
shuffle      ``DataLoader(ds, sampler=src.sampler(len(ds)))`` (an epoch's order per shuffle
             seed; the data resample's examples only; the CPU kernels stand-in within batches)
augment      ``ds = src.augmented(ds, transform)``: transform of example i in epoch e runs
             with the global RNGs (torch CPU, python ``random``, numpy's legacy one) seeded
             from (augment seed, e, i), so torchvision transforms
             v2 work in DataLoader workers (any number) and do not move with the data order
dropout      ``src.dropout(model)`` then ``src.select(epoch, index)`` before each step:
             nn.Dropout masks keyed by (dropout seed, epoch, example index, layer);
             ``with src.step_rng(step):`` around the forward pass for F.dropout, attention
             dropout or any other global-RNG draw (keyed per step, not per example)
kernels      ``src.kernels()``: deterministic kernels unless the kernels source varies
bitflip      ``src.flip(model)``: the one-ulp flip of one weight (after building the model)
data         ``src.train_index(n)`` (None: all n) for a training set of ``n`` examples;
             the sampler above applies it already
===========  ==============================================================================

``src.seed(source)`` is the 32-bit form (0 ... 2**32 - 1, what seed_everything and np.random.seed
accept) of the 63-bit seed every draw here uses (``src.seeds``).
Everything here is a function of the seeds, so a run is reproducible bit for bit where the
kernels are deterministic; nothing touches the caller's global RNG outside the forked blocks.
"""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path

import numpy as np
import torch

from nondet.seeds import SOURCES, ReplicaSeeds, derive_seed, replica_seeds, torch_generator
from nondet.training.bitflip import apply_bitflip
from nondet.training.dropout import attach_masks
from nondet.training.resample import replica_index
from nondet.training.usermodel import replace_dropout, seeded_global_rng

#: Keys that separate the draws this module derives from one source's seed.
_STEP_RNG_KEY, _AUGMENT_KEY, _STANDIN_KEY = 7, 11, 13

#: Seeds handed to a script (``ctx.seed``, a command's ``{seeds_json}``) fit in 32 bits, the range
#: every framework accepts (Lightning's seed_everything, numpy's legacy np.random.seed: 0 ... 2**32 - 1).
SEED_RANGE = 1 << 32

#: How many ``with`` blocks of this module (init, step_rng, augment) are open: the audit's probes
#: (nondet.workflow.scriptaudit) count global-RNG draws outside them only.
SEEDED = {"depth": 0}


def seed32(seed: int | None) -> int | None:
    """The 32-bit form of a source's seed (its low 32 bits; None stays None)."""
    return None if seed is None else int(seed) % SEED_RANGE


@contextlib.contextmanager
def seeded_globals(seed: int, device=None):
    """Every global generator a script may draw from, forked and seeded from ``seed``: torch's
    (CPU, and ``device`` if CUDA), python ``random`` and numpy's legacy global; all restored after."""
    state_py, state_np = random.getstate(), np.random.get_state()
    random.setstate(random.Random(int(seed)).getstate())
    np.random.set_state(np.random.RandomState(seed32(derive_seed(int(seed), 1))).get_state())
    SEEDED["depth"] += 1
    try:
        with seeded_global_rng(int(seed), device):
            yield
    finally:
        SEEDED["depth"] -= 1
        random.setstate(state_py)
        np.random.set_state(state_np)


def as_seeds(seeds) -> ReplicaSeeds:
    """A :class:`ReplicaSeeds` from itself, a dict (``--seeds`` JSON) or a JSON string/file."""
    if isinstance(seeds, ReplicaSeeds):
        return seeds
    if isinstance(seeds, (str, Path)):
        text = str(seeds)
        seeds = json.loads(Path(text).read_text() if not text.lstrip().startswith("{") else text)
    unknown = set(seeds) - set(SOURCES)
    if unknown:
        raise ValueError(f"unknown sources {sorted(unknown)} in seeds; known: {', '.join(SOURCES)}")
    return ReplicaSeeds(**{s: seeds.get(s) for s in SOURCES})


class EpochSampler(torch.utils.data.Sampler):
    """Indices of one epoch per iteration: the shuffle seed's permutation of the replica's
    training examples (all, or its ``data`` resample); with ``batch_size`` and a varying
    ``kernels`` source on a CPU, the rows of each batch permuted (the labelled stand-in for
    nondeterministic kernels: same batches, another summation order). The epoch counts itself
    up on every ``iter`` (or set it with :meth:`set_epoch`)."""

    def __init__(self, seeds: ReplicaSeeds, n: int, index=None, batch_size=None, standin=False, keyed=False):
        self.seeds, self.n, self.batch_size, self.standin, self.keyed = seeds, int(n), batch_size, standin, keyed
        self.index = None if index is None else torch.as_tensor(index, dtype=torch.int64)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n if self.index is None else len(self.index)

    def order(self, epoch: int) -> torch.Tensor:
        perm = torch.randperm(len(self), generator=torch_generator(derive_seed(self.seeds.shuffle, epoch)))
        order = perm if self.index is None else self.index[perm]
        if self.standin and self.batch_size:
            g = torch_generator(derive_seed(self.seeds.kernels, _STANDIN_KEY, epoch))
            chunks = order.split(int(self.batch_size))
            order = torch.cat([c[torch.randperm(len(c), generator=g)] for c in chunks])
        return order

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        for i in self.order(epoch).tolist():
            yield (epoch, i) if self.keyed else i


class AugmentedDataset(torch.utils.data.Dataset):
    """``base[i]`` with ``transform`` applied to its input inside the global torch RNG forked and
    seeded from (augment seed, epoch, i): the augmentation of an example is a function of those
    three alone, whichever DataLoader worker draws it. Index it with (epoch, i) keys, as
    :meth:`Sources.sampler` gives with ``keyed=True`` (robust with persistent workers), or with
    plain i after setting :attr:`epoch`. Items are ``(transform(x), y, i)``: the example index
    lets the training step look up its dropout masks (:meth:`Sources.select`)."""

    def __init__(self, base, transform, seed: int, epoch: int = 0):
        self.base, self.transform, self.seed, self.epoch = base, transform, int(seed), int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)
        x, y = self.base[int(i)][:2]
        if self.transform is not None:  # torch's CPU generator (where transforms draw), random, numpy
            with seeded_globals(derive_seed(self.seed, _AUGMENT_KEY, int(epoch), int(i))):
                x = self.transform(x)
        return x, y, int(i)


class Sources:
    """The per-source API of one replica (see the module docstring); ``device``: where the
    script trains (the kernel mode and the stand-in depend on it)."""

    def __init__(self, seeds, device="cpu", resample: dict | None = None, kernels_cpu_standin: bool = True):
        self.seeds = as_seeds(seeds)
        self.device = torch.device(device)
        self.resample = resample
        self.kernels_cpu_standin = bool(kernels_cpu_standin)
        self.masks = []
        self.drawn_index = None  # the training examples train_index (or sampler) handed out
        self.drawn_n = None  # the size of the training set they were drawn from

    @classmethod
    def for_replica(cls, condition: str, replica: int, base_seed: int = 0, **kwargs) -> "Sources":
        """The sources of a replica of a built-in condition (by hand, outside the pipeline)."""
        return cls(replica_seeds(condition, replica, base_seed), **kwargs)

    def seed(self, source: str) -> int | None:
        """The seed of ``source`` in 0 ... 2**32 - 1, the range every framework accepts
        (``seed_everything``, ``np.random.seed``); None: kernels deterministic, no flip, the full
        training set. The 63-bit seed the pipeline derives is ``ctx.seeds.<source>``."""
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")
        return seed32(getattr(self.seeds, source))

    def generator(self, source: str, *keys: int, device="cpu") -> torch.Generator:
        """A fresh torch.Generator of ``source`` keyed by ``keys`` (e.g. the epoch)."""
        self.seed(source)  # checks the name
        seed = getattr(self.seeds, source)
        if seed is None:
            raise ValueError(f"source {source!r} has no seed in this replica (it is off)")
        return torch_generator(derive_seed(seed, *keys), device)

    # init ------------------------------------------------------------------------------------
    def init(self):
        """Context: build the model inside it and its initialisation draws from init alone
        (torch's global generator, python ``random`` and numpy's, forked and seeded)."""
        return seeded_globals(self.seeds.init, self.device if self.device.type == "cuda" else None)

    # data and shuffle ------------------------------------------------------------------------
    def train_index(self, n: int) -> np.ndarray | None:
        """The training examples of this replica (the data source), or None for all ``n``
        (``n``: the size of the training set, the pipeline's or the script's own)."""
        index = replica_index(self.seeds.data, int(n), self.resample)
        self.drawn_index = np.arange(int(n)) if index is None else index  # what ctx.save reports
        self.drawn_n = int(n)
        return index

    @property
    def standin(self) -> bool:
        return (not self.seeds.deterministic) and self.device.type == "cpu" and self.kernels_cpu_standin

    def sampler(self, n: int, batch_size: int | None = None, keyed: bool = False) -> EpochSampler:
        """The replica's order of its training examples, one epoch per iteration; ``keyed``:
        yield (epoch, index) for :class:`AugmentedDataset`."""
        return EpochSampler(self.seeds, n, self.train_index(n), batch_size, self.standin, keyed)

    # augment ---------------------------------------------------------------------------------
    def augmented(self, dataset, transform) -> AugmentedDataset:
        """``dataset`` whose items' inputs go through ``transform`` seeded per (epoch, index)."""
        return AugmentedDataset(dataset, transform, self.seeds.augment)

    def augment_rng(self, epoch: int, index: int):
        """The global generators (torch CPU, python ``random``, numpy's), forked and seeded from
        (augment seed, epoch, index)."""
        return seeded_globals(derive_seed(self.seeds.augment, _AUGMENT_KEY, int(epoch), int(index)))

    # dropout ---------------------------------------------------------------------------------
    def dropout(self, model: torch.nn.Module, n: int) -> torch.nn.Module:
        """Swap ``model``'s nn.Dropout layers for seeded ones with per-example masks over ``n``
        training examples (call :meth:`select` before each training step)."""
        replace_dropout(model)
        self.masks = attach_masks(model, self.seeds.dropout, int(n))
        return model

    def select(self, epoch: int, index) -> None:
        """The epoch and the example indices of the batch about to go forward (its masks)."""
        index = torch.as_tensor(index, dtype=torch.int64)
        for m in self.masks:
            m.select(epoch, index)

    def step_rng(self, step: int):
        """Context for one training step: global-RNG draws (F.dropout, attention dropout,
        stochastic depth) come from (dropout seed, step) alone."""
        cuda = self.device if self.device.type == "cuda" else None
        return seeded_globals(derive_seed(self.seeds.dropout, _STEP_RNG_KEY, int(step)), cuda)

    # kernels ---------------------------------------------------------------------------------
    def kernels(self) -> str:
        """Set the kernel mode of this replica; returns how the kernels source is realised."""
        from nondet.training.replica import kernels_mode, set_kernel_mode

        set_kernel_mode(self.seeds.deterministic, self.device)
        return kernels_mode(self.seeds, self.device, self.kernels_cpu_standin)

    # bitflip ---------------------------------------------------------------------------------
    def flip(self, model: torch.nn.Module, tensor: str | None = None) -> dict:
        """The one-ulp flip of one scalar of a conv/linear weight (or of parameter ``tensor``),
        when this replica flips; call it right after building the model. Returns what changed."""
        if self.seeds.bitflip is None:
            return {}
        return apply_bitflip(model, self.seeds.bitflip, tensor)
