"""A table of final scores: one row per training run, the quickest way into the verdict.

``python -m nondet verdict scores.csv --baseline A --candidate B`` reads a CSV with a column
``arm`` (which configuration the run belongs to), an optional ``seed`` (runs of the two arms
that share a seed are paired) and one numeric column per metric. Which way is better comes from
the column's name (``METRIC_WORDS``) or from ``--higher-is-better`` / ``--lower-is-better``.
Every problem is an ``InputError`` naming the file, the column and the row.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np

from nondet.io.h5io import InputError

#: Words in a column name that say which way is better (matched as whole words of the name,
#: split at "_", "-", "@", "." and spaces; "top1_acc" -> top1, acc).
METRIC_WORDS = {
    True: {"accuracy", "acc", "top1", "top5", "f1", "auc", "auroc", "bleu", "rouge", "map", "precision", "recall"},
    False: {"loss", "error", "err", "nll", "cross_entropy", "ce", "perplexity", "ppl", "wer", "cer", "mse", "mae"},
}
RESERVED = ("arm", "seed")


def direction(column: str, higher=(), lower=(), where: str = "") -> bool:
    """True when higher is better for ``column``: stated, or read from its name; else an error."""
    if column in higher or column in lower:
        return column in higher
    if column.lower() in METRIC_WORDS[False]:
        return False
    words = set(re.split(r"[_\-@.\s]+", column.lower()))
    found = {hib for hib, names in METRIC_WORDS.items() if words & names}
    if len(found) == 1:
        return found.pop()
    raise InputError(
        f"{where}column {column!r}: is higher better or lower? Name it (e.g. accuracy, loss) or pass "
        f"--higher-is-better {column} (or --lower-is-better {column})"
    )


def read_scores(path, baseline: str, candidate: str, metrics=None, higher=(), lower=()) -> dict:
    """The two arms' runs from a scores CSV: {"baseline": {metric: scores}, "candidate": {...},
    "names": {arm: [run labels]}, "pairs": [(candidate row, baseline row)] or None,
    "higher_is_better": {metric: bool}}."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file (a CSV with columns arm, optional seed, and one per metric)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        table = []
        for r in reader:
            if None in r:  # more fields than the header: a decimal comma, or a stray separator
                raise InputError(
                    f"{path}, line {reader.line_num}: {len(columns) + len(r[None])} fields, the header has "
                    f"{len(columns)} (a decimal comma? write 96.1, not 96,1)"
                )
            table.append({k.strip(): v for k, v in r.items()})
    if "arm" not in columns:
        raise InputError(
            f"{path}: no column 'arm' (columns: {', '.join(columns) or 'none'}); add one naming each run's arm"
        )
    if len(set(columns)) != len(columns):
        raise InputError(f"{path}: a column name appears twice: {columns}")
    metrics = list(metrics) if metrics else [c for c in columns if c not in RESERVED]
    for m in metrics:
        if m not in columns:
            raise InputError(f"{path}: no column {m!r} (columns: {', '.join(columns)})")
    if not metrics:
        raise InputError(f"{path}: no metric column besides {', '.join(RESERVED)}")
    arms = {r["arm"].strip() for r in table if r.get("arm")}
    out = {"baseline": {}, "candidate": {}, "names": {}, "pairs": None}
    out["higher_is_better"] = {m: direction(m, higher, lower, f"{path}, ") for m in metrics}
    seeds = {}
    for role, arm in (("baseline", baseline), ("candidate", candidate)):
        rows = [(i + 2, r) for i, r in enumerate(table) if (r.get("arm") or "").strip() == arm]  # line 1: header
        if not rows:
            raise InputError(
                f"{path}: no run of arm {arm!r} in column 'arm' (arms: {', '.join(sorted(arms)) or 'none'})"
            )
        if len(rows) < 2:
            raise InputError(f"{path}: arm {arm!r} has 1 run (line {rows[0][0]}): a comparison needs >= 2 runs per arm")
        for m in metrics:
            vals = []
            for line, r in rows:
                text = (r.get(m) or "").strip()
                try:
                    x = float(text)
                except ValueError:
                    raise InputError(f"{path}, line {line}, column {m!r}: {text!r} is not a number") from None
                if not math.isfinite(x):
                    raise InputError(
                        f"{path}, line {line}, column {m!r}: {text!r} is not a finite number; drop the run "
                        "or record its score (a diverged run's score, if it was scored)"
                    )
                vals.append(x)
            out[role][m] = np.array(vals)
        if "seed" in columns:
            s = [(r.get("seed") or "").strip() for _, r in rows]
            seen = {}
            for (line, _), v in zip(rows, s):
                if v and v in seen:
                    raise InputError(
                        f"{path}, line {line}, column 'seed': seed {v!r} appears twice in arm {arm!r} "
                        f"(lines {seen[v]} and {line}); one run per seed and arm"
                    )
                seen[v] = line
            seeds[role] = s
            out["names"][role] = [f"seed {v} (line {line})" if v else f"line {line}" for (line, _), v in zip(rows, s)]
        else:
            out["names"][role] = [f"line {line}" for line, _ in rows]
    if seeds:
        where = {v: i for i, v in enumerate(seeds["baseline"]) if v}
        pairs = [(i, where[v]) for i, v in enumerate(seeds["candidate"]) if v in where]
        out["pairs"] = pairs if len(pairs) >= 2 else None
    return out
