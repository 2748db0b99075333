"""The checks the first GPU must answer (issue 22), in one table. Not a test: it prints.

    .venv/bin/python benchmarks/gpu_check.py                   # on CUDA, ~5 min on one GPU
    .venv/bin/python benchmarks/gpu_check.py --quick --device cpu   # the CPU-capable dry part

Rows: control replicas bitwise identical, trained one after another and vectorised (torch.func
vmap); kernel-varying replicas different (real nondeterministic
kernels on CUDA, the labelled within-batch permutation on CPU), in one process; how many one-ulp
flips were absorbed; deterministic against default kernels (the cost of determinism, s per
run); ResNet-14 images/s trained one replica after another, vectorised, and fed by the authors'
data path (torchvision PIL transforms in a 4-worker DataLoader) against ours. The device, its
name and compute capability head the table. Data: random CIFAR-shaped tensors (no download).
tests/test_gpu_check.py runs ``--quick --device cpu``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench import RESNET14, authors_vs_ours, cifar_like  # noqa: E402
from nondet.io.files import accelerator  # noqa: E402
from nondet.seeds import replica_seeds  # noqa: E402
from nondet.training.recipe import Bookkeeping, TrainRun  # noqa: E402
from nondet.training.replica import train_replica  # noqa: E402
from nondet.training.vectorized import train_replicas_vectorized  # noqa: E402
from nondet.workflow.torch_stages import same_weights  # noqa: E402


def recipe(epochs: int, batch: int) -> dict:
    return {
        "epochs": epochs,
        "batch_size": batch,
        "lr": 0.4,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 5e-4,
        "warmup_epochs": 0,
        "cycles": 1,
        "augment": "crop_flip",
        "augment_size": 4,
        "kernels_cpu_standin": True,
        "eval_every": 0,
    }


def checks(
    device: torch.device, spec: dict, n_train: int, epochs: int, batch: int, flips: int, speed_steps: int
) -> list[tuple[str, str, str]]:
    quiet = lambda *a, **k: None  # noqa: E731
    data = cifar_like(n_train, 100).to(device)
    r = recipe(epochs, batch)
    rows = []

    def seq(condition, replica):
        return train_replica(
            TrainRun(spec, r, device), replica_seeds(condition, replica, 0), data, Bookkeeping(log=quiet)
        )

    c0 = seq("control", 0)  # also the warm-up of the timings below
    t0 = time.perf_counter()
    c1 = seq("control", 1)
    t_det = time.perf_counter() - t0
    rows.append(
        ("control, one after another", str(same_weights(c0["state"], c1["state"])), "2 replicas, weights bitwise equal")
    )
    vec = train_replicas_vectorized(
        TrainRun(spec, r, device), [replica_seeds("control", i, 0) for i in (0, 1)], data, Bookkeeping(log=quiet)
    )
    rows.append(
        (
            "control, vectorised (vmap)",
            str(same_weights(vec[0]["state"], vec[1]["state"])),
            f"2 replicas; equal to the sequential run: {same_weights(vec[0]['state'], c0['state'])}",
        )
    )
    t0 = time.perf_counter()
    k0 = seq("kernels", 0)
    t_fast = time.perf_counter() - t0
    k1 = seq("kernels", 1)
    rows.append(
        (
            "kernels replicas differ (one process)",
            str(not same_weights(k0["state"], k1["state"])),
            f"kernels_mode {k0['kernels_mode']}",
        )
    )
    absorbed = sum(same_weights(seq("bitflip", i)["state"], c0["state"]) for i in range(flips))
    rows.append(("bitflip absorbed", f"{absorbed} of {flips}", "final weights bitwise equal to control replica 0"))
    rows.append(("cost of determinism", f"{t_det:.2f} s vs {t_fast:.2f} s", "per run: deterministic vs default"))
    # throughput: one replica after another against vectorised, then the authors' data path
    n = batch * speed_steps
    speed = recipe(1, batch)
    fast = cifar_like(n, 100).to(device)
    seeds = [replica_seeds("all", i, 0) for i in range(4)]
    t0 = time.perf_counter()
    for s in seeds:
        train_replica(
            TrainRun(RESNET14 if spec["width"] == 16 else spec, speed, device), s, fast, Bookkeeping(log=quiet)
        )
    t_seq = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_replicas_vectorized(
        TrainRun(RESNET14 if spec["width"] == 16 else spec, speed, device), seeds, fast, Bookkeeping(log=quiet)
    )
    t_vec = time.perf_counter() - t0
    rows.append(
        (
            "images/s, 4 replicas",
            f"{4 * n / t_seq:.0f} sequential, {4 * n / t_vec:.0f} vmap",
            f"batch {batch}, {speed_steps} steps each, start-up included",
        )
    )
    theirs, ours = authors_vs_ours(n, batch, speed_steps, workers=0 if device.type == "cpu" else 4)
    rows.append(("images/s, data path", f"{theirs:.0f} authors', {ours:.0f} ours", "ResNet-14 steps, 1 replica"))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the CPU dry part)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.quick:
        rows = checks(device, {"arch": "resnet", "blocks": 1, "width": 4}, 64, 1, 32, 2, 2)
    else:
        rows = checks(device, RESNET14, 5120, 2, 512, 4, 20)
    acc = accelerator(device)
    print(
        f"device: {device} ({acc['name']}, compute capability {acc.get('capability', '-')}), "
        f"torch {torch.__version__}\n"
    )
    print("| check | result | detail |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
