"""One config per report: ``results/tables/provenance.csv`` is made last, from every table and
figure of the run (rule ``provenance``), and lists the config hash and each file's SHA-256.
``snakemake --report`` (rules/common.smk) refuses to build a report when provenance.csv was made
from another config than the one given, or when a table or figure is not the one it lists (a
later run rebuilt some files, then failed). No torch, no pandas: this runs while the workflow is
parsed."""

from __future__ import annotations

import csv
import hashlib
import sys
from pathlib import Path

from nondet.io.h5io import spec_hash

#: Row keys of provenance.csv that list a file it covers (``file:<path>``, its SHA-256).
FILE_ROW = "file:"


def file_rows(paths) -> list[tuple[str, str]]:
    """(``file:<path>``, SHA-256) of each file a provenance table covers."""
    rows = []
    for p in sorted({str(p) for p in paths}):
        rows.append((FILE_ROW + p, hashlib.sha256(Path(p).read_bytes()).hexdigest()))
    return rows


def report_mode(argv=None) -> bool:
    """Whether this Snakemake process builds a report (``--report`` on its command line)."""
    argv = sys.argv if argv is None else argv
    return any(a == "--report" or a.startswith("--report=") for a in argv)


def stale_report(config: dict, provenance_path) -> str | None:
    """Why a report of ``config`` would mix outputs of several configs, or None if it would not
    (or provenance.csv does not exist yet: Snakemake then says the report lacks it)."""
    path = Path(provenance_path)
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = {r["key"]: r["value"] for r in csv.DictReader(f)}
    want = spec_hash(config)
    have = rows.get("config_hash")
    fix = (
        "run the workflow to the end with this config first (snakemake --cores N, same "
        "--configfile/--config options), then build the report"
    )
    if have != want:
        return (
            f"{path} was made from another config (config_hash {have}, this config {want}): the "
            "last run with this config did not finish, so the tables and figures are not all "
            f"from this config; {fix}"
        )
    bad = []
    for key, sha in rows.items():
        if not key.startswith(FILE_ROW):
            continue
        p = Path(key[len(FILE_ROW) :])
        if not p.is_file():
            bad.append(f"  {p}: missing")
        elif hashlib.sha256(p.read_bytes()).hexdigest() != sha:
            bad.append(f"  {p}: not the file {path} lists (rebuilt by a later run that did not finish?)")
    if bad:
        return (
            f"the report would mix outputs of different runs; these tables and figures are not "
            f"the ones {path} was made from:\n" + "\n".join(bad) + f"\n{fix}"
        )
    return None


#: What a training job logs when every replica it trained diverged (nondet.workflow.torch_stages).
ALL_DIVERGED = "REPLICAS DIVERGED"


def diverged_jobs(log_root="logs") -> list[str]:
    """One line per training log under ``log_root`` whose job saw all its replicas diverge: the
    end-of-run summary (the Snakefile's onsuccess/onerror) names each such job once."""
    out = []
    for path in sorted(Path(log_root).glob("**/*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if ALL_DIVERGED in line and "] ALL " in line:
                out.append(f"{path}: {line.split('] ', 1)[-1].split(' (', 1)[0]}")
                break
    return out
