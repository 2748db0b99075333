"""Divergence of twin runs, the measure of instability: how far a twin drifts from its base run
over training (docs/protocol.md §3).

The base run is replica 0 of ``control``. Each twin changes one thing: ``bitflip`` twins nudge one
initial weight by one ulp (several flip seeds), an ``init`` twin draws a fresh initialisation, a
``shuffle`` twin a fresh data order. At log-spaced steps we compare the twin with the base run:
relative parameter distance ||theta - theta'|| / ||theta|| and test-set disagreement.
"""

from __future__ import annotations

import numpy as np


def log_steps(total_steps: int, points: int) -> list[int]:
    """0 plus about ``points`` log-spaced step counts up to ``total_steps`` (dense early)."""
    if total_steps < 1:
        return [0]
    grid = np.logspace(0, np.log10(total_steps), max(points - 1, 1))
    return sorted({0, total_steps, *np.unique(np.round(grid).astype(int)).tolist()})


def twin_runs(twins: dict) -> list[tuple[str, str, int]]:
    """(name, condition, replica) of the base run and every twin; ``twins`` maps source -> count."""
    runs = [("base", "control", 0)]
    for source in ("bitflip", "init", "shuffle", "augment", "dropout"):
        for k in range(int(twins.get(source, 0))):
            runs.append((f"{source}{k}", source, k))
    return runs


def relative_distance(base: np.ndarray, twin: np.ndarray) -> np.ndarray:
    """||base - twin|| / ||base|| per recorded step; arrays (steps, n_params)."""
    base = np.asarray(base, dtype=np.float64)
    diff = base - np.asarray(twin, dtype=np.float64)
    return np.linalg.norm(diff, axis=-1) / np.linalg.norm(base, axis=-1)


def disagreement(base_logits: np.ndarray, twin_logits: np.ndarray) -> np.ndarray:
    """% of test examples whose argmax differs, per recorded step; arrays (steps, n, k)."""
    return 100.0 * (base_logits.argmax(-1) != twin_logits.argmax(-1)).mean(-1)


def zero_from_step(steps, distance) -> int:
    """First recorded step from which a twin stays bitwise equal to its base run (distance
    exactly 0 at every later record), or -1 if it never returns to the base run."""
    distance = np.asarray(distance)
    if len(distance) == 0 or distance[-1] != 0:
        return -1
    nonzero = np.flatnonzero(distance != 0)
    return int(steps[nonzero[-1] + 1]) if len(nonzero) else int(steps[0])
