"""The runs of the arms of a comparison, read once for every stage that compares them: trained
arms (rules compare and runs_compare) and imported groups (runs_all_pairs) alike.

:func:`per_example_arms` reads each arm's prediction files, checks that every arm was scored on
the same test set, applies the diverged-run policy (config ``metrics.on_diverged``) and returns
the per-example values the verdict engine (nondet.analysis.inference) compares. Every refusal
is an :class:`~nondet.io.h5io.InputError` naming the arms and their files.
"""

from __future__ import annotations

import numpy as np

from nondet.analysis.variance import per_example_values
from nondet.io.checksums import array_sha256
from nondet.io.files import kept_replicas, load_predictions
from nondet.io.h5io import InputError


def per_example_arms(paths: dict, on_diverged: str, log=None, expect: dict | None = None) -> tuple[dict, dict]:
    """(arm -> metric -> per-example values (runs, n), arm -> the kept runs' names) of the runs
    of each arm kept by the diverged-run policy ``on_diverged`` (``exclude``: dropped, each
    drop told to ``log``, a function taking a line; ``fail``: an error).

    ``paths``: arm -> the list of its prediction files (concatenated);
    ``expect``: arm -> what its files must carry (nondet.io.files.load_predictions). Every arm
    must hold the same test examples in the same order (their labels are compared).
    """
    files = {arm: list(ps) for arm, ps in paths.items()}
    preds = {arm: load_predictions(ps, (expect or {}).get(arm)) for arm, ps in files.items()}
    first = next(iter(preds), None)
    for arm, pred in preds.items():
        ref, labels = preds[first]["labels"], pred["labels"]
        if labels.shape != ref.shape or not np.array_equal(labels, ref):
            raise InputError(
                f"{first!r} ({', '.join(map(str, files[first]))}, labels sha256 {array_sha256(ref)[:12]}) and "
                f"{arm!r} ({', '.join(map(str, files[arm]))}, labels sha256 {array_sha256(labels)[:12]}) were scored "
                "on different test sets: comparisons need the same examples in the same order; "
                "predict every arm on one data set"
            )
    values, names = {}, {}
    for arm, pred in preds.items():
        keep = kept_replicas(pred["diverged"], pred["replicas"], arm, on_diverged, log)
        values[arm] = per_example_values(pred["logits"][keep], pred["labels"])
        names[arm] = [f"replica {int(r)}" for r in np.asarray(pred["replicas"])[keep]]
    return values, names
