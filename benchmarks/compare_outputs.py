"""Are two results folders the same numbers? Every HDF5 file found in both (same relative path):
every dataset compared bitwise (attributes, which hold provenance such as times and commits, are
not); every CSV table found in both: the columns they share, value by value as written. Prints
what differs and exits 1 if anything does. Not a test.

    .venv/bin/python benchmarks/compare_outputs.py A/results B/results
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import h5py
import numpy as np


def _datasets(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.update({name: obj[()]}) if isinstance(obj, h5py.Dataset) else None)
    return out


def _same_array(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return a.tobytes() == b.tobytes()  # bitwise, NaNs included
    return bool(np.array_equal(a, b))


def compare_h5(a: Path, b: Path) -> list[str]:
    da, db = _datasets(a), _datasets(b)
    diffs = [f"only in one: {k}" for k in sorted(set(da) ^ set(db))]
    diffs += [f"differs: {k}" for k in sorted(set(da) & set(db)) if not _same_array(da[k], db[k])]
    return diffs


def compare_csv(a: Path, b: Path) -> tuple[list[str], list[str]]:
    """(differences, columns only one side has)."""
    ra, rb = list(csv.DictReader(open(a))), list(csv.DictReader(open(b)))
    if len(ra) != len(rb):
        return [f"{len(ra)} vs {len(rb)} rows"], []
    ca, cb = (list(r[0]) if r else [] for r in (ra, rb))
    shared = [c for c in ca if c in cb]
    diffs = [
        f"row {i} {c}: {x[c]!r} vs {y[c]!r}" for i, (x, y) in enumerate(zip(ra, rb)) for c in shared if x[c] != y[c]
    ]
    return diffs, sorted(set(ca) ^ set(cb))


def main(a: Path, b: Path) -> int:
    same, bad, skipped = 0, 0, 0
    for kind in ("h5", "csv"):
        for path in sorted(a.rglob(f"*.{kind}")):
            rel = path.relative_to(a)
            if not (b / rel).exists():
                skipped += 1
                continue
            if kind == "h5":
                diffs, extra = compare_h5(path, b / rel), []
            else:
                diffs, extra = compare_csv(path, b / rel)
            if diffs:
                bad += 1
                print(f"DIFFERENT {rel}: " + "; ".join(diffs[:5]) + (" ..." if len(diffs) > 5 else ""))
            else:
                same += 1
                if extra:
                    print(f"same values in shared columns {rel} (columns on one side only: {', '.join(extra)})")
    print(f"{same} files identical in content, {bad} different, {skipped} only in {a}")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
