"""``python -m nondet``: the package's command line, for work outside a Snakemake run.

python -m nondet check-config config.yaml my.yaml   # validate configs merged in order
python -m nondet check-runs 'preds/*.npy' --labels y.npy
python -m nondet export-runs results/predict/cnn/all/chunk*.h5 --out exports/all
"""

from __future__ import annotations

import argparse


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
    args = parser.parse_args(argv)
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
