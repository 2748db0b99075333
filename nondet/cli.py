"""``python -m nondet``: the package's command line, for work outside a Snakemake run.

python -m nondet verdict scores.csv --baseline A --candidate B   # is B really better than A?
python -m nondet verdict --predictions A='runs/a/*.npy' --predictions B='runs/b/*.npy' --labels y.npy \
    --baseline A --candidate B
python -m nondet check-config config.yaml my.yaml   # validate configs merged in order
python -m nondet check-runs 'preds/*.npy' --labels y.npy
python -m nondet export-runs results/predict/cnn/all/chunk*.h5 --out exports/all
python -m nondet resample --resample '{"seed": 7, "kind": "bootstrap", "fraction": 1.0}' --n 50000 --out idx.npy
"""

from __future__ import annotations

import argparse
import sys


def _arms_from_predictions(args, parser) -> dict:
    """--predictions ARM=GLOB (one per arm) and --labels: per-example values of the two arms."""
    from nondet.analysis.variance import per_example_values
    from nondet.io.h5io import InputError
    from nondet.io.runs import load_group

    globs = {}
    for item in args.predictions:
        name, sep, pattern = item.partition("=")
        if not sep or not name or not pattern:
            parser.error(f"--predictions {item!r}: write ARM=GLOB, e.g. --predictions base='runs/base/*.npy'")
        globs[name] = pattern
    out = {"names": {}, "pairs": None, "higher_is_better": {}}
    labels = {}
    for role, arm in (("baseline", args.baseline), ("candidate", args.candidate)):
        if arm not in globs:
            raise InputError(f"--{role} {arm}: no --predictions {arm}=GLOB (given: {', '.join(globs) or 'none'})")
        spec = {"predictions": globs[arm], "labels": args.labels, "kind": args.kind}
        g = load_group(spec, arm)
        labels[role] = g["labels_sha256"]
        out[role] = per_example_values(g["logits"], g["labels"])
        out["names"][role] = [f"run {i}" for i in range(g["logits"].shape[0])]
    if labels["baseline"] != labels["candidate"]:
        raise InputError(
            f"--predictions {args.baseline} and {args.candidate} carry different labels: not the same test set"
        )
    return out


def verdict(args, parser) -> int:
    """``python -m nondet verdict``: the same engine, decision lines and calibration as the
    pipeline's comparisons, without Snakemake (no torch imported)."""
    from nondet.analysis.inference import compare
    from nondet.analysis.rows import VerdictError
    from nondet.analysis.verdict import verdict as decide
    from nondet.analysis.verdict import verdict_lines
    from nondet.io.h5io import InputError
    from nondet.io.scores import read_scores

    if bool(args.scores) == bool(args.predictions):
        parser.error("give a scores CSV or --predictions ARM=GLOB for both arms (not both, not neither)")
    try:
        if args.scores:
            arms = read_scores(
                args.scores, args.baseline, args.candidate, args.metric, args.higher_is_better, args.lower_is_better
            )
        else:
            arms = _arms_from_predictions(args, parser)
        metrics = list(arms["baseline"])
        margin = {m: args.margin for m in metrics} if args.margin is not None else None
        rows = compare(
            arms["baseline"],
            arms["candidate"],
            args.alpha,
            arms["pairs"],
            margin,
            higher_is_better=arms["higher_is_better"],
        )
        runs = {
            arm: {m: (v.mean(1) if v.ndim == 2 else v) for m, v in arms[arm].items()}
            for arm in ("baseline", "candidate")
        }
        verdicts = decide(rows, args.gamma, args.alpha, runs={**runs, "names": arms["names"], "pairs": arms["pairs"]})
    except (InputError, VerdictError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    units = {m: "" for m in metrics} if args.scores else None
    for line in verdict_lines(f"{args.candidate} vs {args.baseline}", verdicts, units):
        print(line)
    if arms["pairs"] is not None:
        print(f"  runs paired by seed: {len(arms['pairs'])} pairs")
    return 0


def resample(args, parser) -> int:
    """``python -m nondet resample``: the replica's training examples (the ``data`` source,
    nondet.training.resample.replica_index), for a script that owns its data and is not written
    in Python against this package: a sorted int64 .npy (every example once when the seed is null)."""
    import json

    import numpy as np

    from nondet.training.resample import DEFAULT, KINDS, replica_index, resample_size

    spec = dict(DEFAULT)
    seed = None
    if args.resample is not None:
        text = args.resample
        try:
            if not text.lstrip().startswith("{"):
                with open(text) as f:
                    text = f.read()
            given = json.loads(text)
        except (OSError, ValueError) as e:
            parser.error(f"--resample {args.resample!r}: neither JSON nor a JSON file ({e}); pass {{resample_json}}")
        if not isinstance(given, dict) or not set(given) <= {"seed", "kind", "fraction"}:
            parser.error(f"--resample: expected the keys seed, kind, fraction ({{resample_json}}); got {given!r}")
        seed = given.get("seed")
        spec.update({k: given[k] for k in ("kind", "fraction") if given.get(k) is not None})
    if args.seed is not None:
        seed = None if args.seed.lower() in ("null", "none") else args.seed
    spec.update({k: v for k, v in (("kind", args.kind), ("fraction", args.fraction)) if v is not None})
    try:
        seed = None if seed is None else int(seed)
        if spec["kind"] not in KINDS:
            raise ValueError(f"unknown kind {spec['kind']!r}; known: {', '.join(KINDS)}")
        resample_size(args.n, spec["fraction"])
    except (TypeError, ValueError) as e:
        parser.error(f"--seed/--kind/--fraction: {e}")
    if args.n < 1:
        parser.error(f"--n {args.n}: the training set's size must be >= 1")
    index = replica_index(seed, args.n, spec)
    index = np.arange(args.n, dtype=np.int64) if index is None else index
    np.save(args.out, index)
    what = "every example once (the data source is off)" if seed is None else f"a {spec['kind']} of {args.n}"
    print(f"wrote {len(index)} indices ({np.unique(index).size} distinct), {what}, to {args.out}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nondet", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cfg = sub.add_parser(
        "check-config",
        help="check config files merged in order as Snakemake does (list config.yaml first), naming "
        "file and line of a YAML error and the key of an invalid value",
    )
    cfg.add_argument("files", nargs="+", help="config.yaml, then the files merged over it")
    ex = sub.add_parser("export-runs", help="write a pipeline's predictions as .npy files (nondet.io.runs.export)")
    ex.add_argument("predictions", nargs="+", help="results/predict/<model>/<condition>/chunk*.h5")
    ex.add_argument("--out", required=True, help="output folder")
    ex.add_argument("--no-features", action="store_true", help="do not write features/")
    check = sub.add_parser("check-runs", help="validate a group of runs and print what would be imported")
    check.add_argument("predictions", help="glob of prediction files")
    check.add_argument("--labels")
    check.add_argument("--kind", default="logits", choices=["logits", "probabilities"])
    check.add_argument("--key")
    ver = sub.add_parser(
        "verdict",
        help="is the candidate really better? The verdict of the engine (nondet.analysis.verdict) from a "
        "table of final scores (one row per run: arm, optional seed, one column per metric) or from "
        "per-example prediction files",
    )
    ver.add_argument("scores", nargs="?", help="CSV: column arm, optional seed (pairs runs), one column per metric")
    ver.add_argument("--baseline", required=True, help="the baseline arm (in column arm, or a --predictions name)")
    ver.add_argument("--candidate", required=True, help="the candidate arm")
    ver.add_argument("--metric", action="append", help="metric column(s) to compare (default: every other column)")
    ver.add_argument("--higher-is-better", action="append", default=[], metavar="COLUMN")
    ver.add_argument("--lower-is-better", action="append", default=[], metavar="COLUMN")
    ver.add_argument("--predictions", action="append", metavar="ARM=GLOB", help="prediction files of one arm")
    ver.add_argument("--labels", help="labels file for --predictions (or labels inside the prediction files)")
    ver.add_argument("--kind", default="logits", choices=["logits", "probabilities"])
    ver.add_argument("--alpha", type=float, default=0.05)
    ver.add_argument("--gamma", type=float, default=0.75, help="a meaningful P(candidate run beats baseline run)")
    ver.add_argument("--margin", type=float, help="equivalence margin in the metric's units: adds TOST")
    res = sub.add_parser(
        "resample",
        help="the training examples a replica trains on when the data source is on (for a script that owns "
        "its data, models.<name>.data: script): a sorted .npy of indices to train on, and to report as "
        "train_index with n_train",
    )
    res.add_argument("--resample", metavar="JSON", help="{resample_json} as a command gets it (seed, kind, fraction)")
    res.add_argument("--seed", help="the data seed (resample_json's seed, not seeds_json's); null: all examples")
    res.add_argument("--kind", choices=["bootstrap", "subsample"], help="default bootstrap")
    res.add_argument("--fraction", type=float, help="the resample's size over n (default 1.0)")
    res.add_argument("--n", type=int, required=True, help="the size of the training set (report it as n_train)")
    res.add_argument("--out", required=True, help="the .npy to write")
    args = parser.parse_args(argv)
    if args.command == "resample":
        return resample(args, res)
    if args.command == "verdict":
        return verdict(args, parser)
    if args.command == "check-config":
        from nondet.workflow.config import check_files

        return check_files(args.files)
    from nondet.io.runs import export, load_group

    if args.command == "export-runs":
        files = export(args.predictions, args.out, features=not args.no_features)
        print(f"wrote {len(files)} runs, labels.npy and metadata.csv to {args.out}")
    else:
        spec = {"predictions": args.predictions, "labels": args.labels, "kind": args.kind, "key": args.key}
        g = load_group(spec, "check-runs")
        m, n, k = g["logits"].shape
        print(f"ok: {m} runs x {n} examples x {k} classes; labels sha256 {g['labels_sha256'][:12]}")
    return 0
