"""Issue 24 item 1, measured (prints, asserts nothing): a Snakemake run on my.npz, a training job
interrupted after 3 of its 4 replicas checkpointed, my.npz regenerated at the same path with other
contents (the labels shifted by 3), Snakemake run again; its table against a clean run on the new
contents. About 2 minutes on 2 cores.

    python benchmarks/regenerated_arrays.py [REPO] [WORKDIR]

REPO: the checkout whose code to measure (default: this one); WORKDIR: a scratch folder (default
/tmp/regenerated_arrays), emptied first.
"""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent).resolve()
WORK = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/regenerated_arrays").resolve()
sys.path.insert(0, str(REPO))

from nondet.io.formats import make_mnist1d  # noqa: E402
from nondet.workflow import config as cfg  # noqa: E402 (the code of REPO)
from nondet.workflow import plan, torch_stages  # noqa: E402

CONFIG = {
    "experiment": "mine",
    "replicas": 4,
    "replicas_per_job": 4,
    "vectorize": "off",  # per-replica checkpoints
    "dataset": {"name": "arrays", "path": "my.npz"},
    "training": {"epochs": 4, "batch_size": 64, "eval_every": 0},
    "models": {"lin": {"arch": "linear", "conditions": ["init"]}},
    "metrics": {"bootstrap_resamples": 20},
    "divergence": {"models": []},
    "stability": {"models": []},
    "mitigation": {"models": []},
}


def snakemake(workdir: Path) -> None:
    (workdir / "c.yaml").write_text(yaml.safe_dump(CONFIG))
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "c.yaml"),
        "--cores",
        "1",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])


def write_npz(path: Path, new: bool) -> None:
    a = make_mnist1d(seed=1, num_samples=1000)
    if new:  # other contents: the same signals, another labelling
        a["y_train"], a["y_test"] = (a["y_train"] + 3) % 10, (a["y_test"] + 3) % 10
    np.savez(path, **a)


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    run, clean = WORK / "run", WORK / "clean"
    run.mkdir(parents=True)
    clean.mkdir()
    write_npz(run / "my.npz", new=False)
    snakemake(run)
    os.chdir(run)  # the config's relative path, as Snakemake sees it
    job = plan.train_job(cfg.validate(CONFIG), "lin", "init", 0)
    real, calls = torch_stages.train_replica, []

    def dies_on_fourth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # like a kill: replicas 0-2 have finished checkpoints
        return real(*args, **kwargs)

    torch_stages.train_replica = dies_on_fourth  # the name the train stage calls
    try:
        torch_stages.train("results/data/arrays.h5", "results/train/lin/init/chunk0.h5", job, checkpoint_every=1)
    except KeyboardInterrupt:
        pass
    torch_stages.train_replica = real
    write_npz(run / "my.npz", new=True)
    write_npz(clean / "my.npz", new=True)
    snakemake(run)
    snakemake(clean)
    for name, d in (("rerun after regenerating my.npz", run), ("clean run on the new contents", clean)):
        row = next(csv.DictReader(open(d / "results/tables/diversity.csv")))
        print(
            f"{name}: accuracy {float(row['acc_mean']):.2f} +- {float(row['acc_sd']):.2f} %, "
            f"disagreement {float(row['disagreement']):.2f} %"
        )


if __name__ == "__main__":
    main()
