"""The ``data`` source: which training examples one replica trains on.

Bouthillier et al. (MLSys 2021) vary the training set itself between runs: each run trains on a
bootstrap of it (n draws with replacement) and is tested on the same held-out set. Here a replica
whose ``data`` seed is set trains on :func:`resample_index` of the training set; a replica whose
``data`` seed is None (every condition that does not vary this source) trains on the full set in
its original order, exactly as before the source existed.

The index set is drawn with NumPy's PCG64 (``numpy.random.default_rng(seed)``), which gives the
same integers on every platform, and sorted: the set (a multiset, for a bootstrap) is what the
seed decides, the order stays the ``shuffle`` source's. A bootstrap's repeated example is an
example of weight two: it is looked up by its own index, so it gets that example's augmentation
and dropout mask in each epoch (nondet.training.augment, nondet.training.dropout), whichever data seed drew it.
"""

from __future__ import annotations

import numpy as np

#: How a replica's training set is drawn (config key data_resampling.kind).
KINDS = ("bootstrap", "subsample")

#: What a run that varies ``data`` does unless the config says otherwise.
DEFAULT = {"kind": "bootstrap", "fraction": 1.0}


def resample_size(n: int, fraction: float = 1.0) -> int:
    """How many examples a resample of an ``n``-example training set holds (at least 1)."""
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"data_resampling.fraction must be in (0, 1], got {fraction!r}")
    return max(1, int(round(float(fraction) * n)))


def resample_index(seed: int, n: int, kind: str = "bootstrap", fraction: float = 1.0) -> np.ndarray:
    """Sorted indices (int64) of the training examples one replica trains on.

    ``bootstrap``: ``round(fraction * n)`` draws with replacement (fraction 1: the classic
    bootstrap, about 63.2 % distinct examples); ``subsample``: that many distinct examples,
    without replacement. A pure function of its arguments.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown data_resampling.kind {kind!r}; known: {', '.join(KINDS)}")
    m = resample_size(n, fraction)
    rng = np.random.default_rng(int(seed))
    if kind == "bootstrap":
        index = rng.integers(0, n, size=m, dtype=np.int64)
    else:
        index = rng.permutation(n)[:m].astype(np.int64)
    return np.sort(index)


def replica_index(seed: int | None, n: int, spec: dict | None = None) -> np.ndarray | None:
    """The replica's index set, or None for the full training set (``seed`` None)."""
    if seed is None:
        return None
    spec = {**DEFAULT, **(spec or {})}
    return resample_index(seed, n, spec["kind"], spec["fraction"])


def handed(seed: int | None, spec: dict | None = None) -> dict:
    """What a script is handed to draw its replica's resample itself (a command's
    ``{resample_json}``): the data seed (the full one :func:`replica_index` uses; None when the
    source is off: the whole training set), kind and fraction."""
    spec = {**DEFAULT, **(spec or {})}
    return {"seed": None if seed is None else int(seed), "kind": spec["kind"], "fraction": float(spec["fraction"])}
