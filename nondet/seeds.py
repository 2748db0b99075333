"""Seeds per source of nondeterminism.

One pure function, :func:`replica_seeds`, maps (condition, replica index, base seed) to one seed
per source. Every random draw in training comes from a generator built from one of these seeds
(see :func:`derive_seed`), never from global RNG state, so a condition varies exactly the sources
it names and nothing else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: Seeded sources, in a fixed order: the order is part of the seed derivation, never reorder.
SOURCES = ("init", "shuffle", "augment", "dropout", "kernels", "bitflip", "data")

#: What varies across the replicas of each condition (docs/protocol.md §1).
CONDITIONS: dict[str, frozenset[str]] = {
    "control": frozenset(),
    "init": frozenset({"init"}),
    "shuffle": frozenset({"shuffle"}),
    "augment": frozenset({"augment"}),
    "dropout": frozenset({"dropout"}),
    "kernels": frozenset({"kernels"}),
    "all": frozenset({"init", "shuffle", "augment", "dropout", "kernels", "data"}),
    "bitflip": frozenset({"bitflip"}),
    # data resampling (Bouthillier et al. 2021): each replica trains on its own bootstrap (or
    # subsample) of the training set, nondet.training.resample; the test set never changes
    "data": frozenset({"data"}),
}

#: Sources a factorial design can give levels: those whose base value is a seed (kernels and
#: bitflip are off at their base value, so they have no level 0 to cross with) and data, whose
#: every level, 0 included, is a resample of its own (the full training set is no level of it).
FACTORIAL_SOURCES = ("init", "shuffle", "augment", "dropout", "data")

_MASK63 = (1 << 63) - 1


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that is a pure function of the non-negative integer ``keys``.

    Uses NumPy's SeedSequence hashing, so nearby keys give unrelated seeds.
    """
    if any((not isinstance(k, (int, np.integer))) or k < 0 for k in keys):
        raise ValueError(f"seed keys must be non-negative integers, got {keys!r}")
    words = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint32)
    return ((int(words[0]) << 32) | int(words[1])) & _MASK63


def torch_generator(seed: int, device="cpu"):
    """A fresh ``torch.Generator`` on ``device`` seeded with ``seed``."""
    import torch  # imported lazily: the Snakefile imports this package and must stay light

    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


@dataclass(frozen=True)
class ReplicaSeeds:
    """Seeds for one training run.

    ``kernels`` is None for deterministic kernels; otherwise the run uses nondeterministic
    kernels (CUDA) or the CPU stand-in, a within-batch permutation drawn from this seed.
    ``bitflip`` is None for no flip; otherwise it picks which initial weight is nudged by one ulp.
    ``data`` is None for the full training set in its original order (every condition that does
    not vary it); otherwise the run trains on the resample of the training set it draws
    (nondet.training.resample). It is left out of :meth:`as_dict` when None, so the job specs and files of
    runs that do not vary it are those of the code before it existed.
    """

    init: int
    shuffle: int
    augment: int
    dropout: int
    kernels: int | None
    bitflip: int | None
    data: int | None = None

    @property
    def deterministic(self) -> bool:
        return self.kernels is None

    def as_dict(self) -> dict:
        out = asdict(self)
        if out["data"] is None:
            del out["data"]
        return out


def replica_seeds(condition: str, replica: int, base_seed: int) -> ReplicaSeeds:
    """Seeds of replica ``replica`` of ``condition``: only the condition's sources depend on it."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; known: {', '.join(CONDITIONS)}")
    if replica < 0:
        raise ValueError(f"replica index must be >= 0, got {replica}")
    return source_seeds({source: replica for source in CONDITIONS[condition]}, base_seed)


def factorial_seeds(sources, cell, base_seed: int) -> ReplicaSeeds:
    """Seeds of one cell of a full factorial design: ``sources[k]`` takes level ``cell[k]``.

    Sources not in the design keep their base value; kernels are deterministic and nothing is
    flipped, so the cell's seeds alone determine the run.
    """
    if len(sources) != len(cell):
        raise ValueError("one level per source")
    for source in sources:
        if source not in FACTORIAL_SOURCES:
            raise ValueError(f"factorial designs vary {'/'.join(FACTORIAL_SOURCES)}, not {source!r}")
    return source_seeds(dict(zip(sources, cell)), base_seed)


def source_seeds(levels: dict[str, int], base_seed: int) -> ReplicaSeeds:
    """Seeds of one run where each source in ``levels`` takes its own level (replica) index.

    A cell of a factorial design (e.g. ``{"init": 2, "shuffle": 0}``) or one replica of an
    arbitrary set of varying sources (``{s: r for s in sources}``). Sources not in ``levels`` keep
    their base value, exactly as in :func:`replica_seeds`, so that
    ``source_seeds({s: r for s in CONDITIONS[c]}, b) == replica_seeds(c, r, b)``.
    """
    unknown = set(levels) - set(SOURCES)
    if unknown:
        raise ValueError(f"unknown sources {sorted(unknown)}; known: {', '.join(SOURCES)}")
    if any(int(level) < 0 for level in levels.values()):
        raise ValueError(f"levels must be >= 0, got {levels!r}")
    seeds = {}
    for index, source in enumerate(SOURCES):
        if source in levels:
            seeds[source] = derive_seed(base_seed, index, int(levels[source]) + 1)
        elif source in ("kernels", "bitflip", "data"):
            seeds[source] = None
        else:
            seeds[source] = derive_seed(base_seed, index, 0)
    return ReplicaSeeds(**seeds)
