"""Speed benchmark: prints Markdown figures (medians of repeats) for BENCHMARKS.md.

    .venv/bin/python benchmarks/bench.py [--repeats 3] [--quick] [--skip-e2e]

1. the default protocol end to end from an empty results dir (wall time);
2. training throughput (images/s), default CNN on mnist1d and ResNet-14 at batch 512 on
   CIFAR-shaped data: one replica per process (start-up and data loading paid per model) vs
   several replicas per job (paid once); vmap and (CPU) the wide path against sequential;
3. the authors' data path (torchvision per-sample PIL transforms in a 4-worker DataLoader) vs ours
   (batched crop+flip on the device), same model and device;
4. pairwise metrics for 100 models x 10 000 examples x 10 classes;
5. dry-run time of the paper-scale DAG;
6. the cost of determinism (deterministic vs fast kernels).
Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nondet.analysis import metrics as M  # noqa: E402
from nondet.io.formats import make_mnist1d  # noqa: E402
from nondet.schema import schema_defaults  # noqa: E402
from nondet.seeds import replica_seeds, torch_generator  # noqa: E402
from nondet.training.augment import Augmenter  # noqa: E402
from nondet.training.data import Dataset, from_arrays  # noqa: E402
from nondet.training.models import build_model  # noqa: E402
from nondet.training.recipe import Bookkeeping, TrainRun  # noqa: E402
from nondet.training.replica import train_replica  # noqa: E402

CNN = {"arch": "cnn1d", "channels": 32, "kernels": [5, 3, 3], "dropout": 0.1}
RESNET14 = {"arch": "resnet", "blocks": 2, "width": 16}
RECIPE = {
    "epochs": 1,
    "batch_size": 128,
    "lr": 0.2,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 1e-2,
    "warmup_epochs": 0,
    "cycles": 1,
    "augment": "shift",
    "augment_size": 2,
    "kernels_cpu_standin": True,
    "eval_every": 0,
}


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cifar_like(n_train, n_test=100, seed=0):
    g = torch_generator(seed)
    return Dataset(
        "cifar-like",
        torch.randn(n_train, 3, 32, 32, generator=g),
        torch.randint(0, 10, (n_train,), generator=g),
        torch.randn(n_test, 3, 32, 32, generator=g),
        torch.randint(0, 10, (n_test,), generator=g),
    )


# --- 1 ---
def e2e(repeats):
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(REPO / "config.yaml", tmp)
            cmd = [
                sys.executable,
                "-m",
                "snakemake",
                "--snakefile",
                str(REPO / "Snakefile"),
                "--directory",
                tmp,
                "--cores",
                str(os.cpu_count()),
                "--quiet",
            ]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --- 2 ---
CHILD = """
import sys, time, torch
sys.path.insert(0, {repo!r})
from nondet.io.formats import make_mnist1d
from nondet.training.data import from_arrays
from nondet.seeds import replica_seeds
from nondet.training.recipe import Bookkeeping, TrainRun
from nondet.training.replica import train_replica
torch.set_num_threads({threads})
data = {data_expr}
for r in range({replicas}):
    train_replica(TrainRun({spec!r}, {recipe!r}, torch.device({dev!r})), replica_seeds("all", r, 0), data,
                  Bookkeeping(log=lambda *a: None))
"""


def per_process_vs_per_job(spec, recipe, data_expr, n_images, replicas, threads):
    """Images/s of `replicas` models: one process per model vs all in one process."""
    dev = str(device())

    def run(reps, procs):
        code = CHILD.format(
            repo=str(REPO), threads=threads, data_expr=data_expr, replicas=reps, spec=spec, recipe=recipe, dev=dev
        )
        for _ in range(procs):
            subprocess.run([sys.executable, "-c", code], check=True)

    one_each = median_time(lambda: run(1, replicas), 1)
    together = median_time(lambda: run(replicas, 1), 1)
    total = n_images * recipe["epochs"] * replicas
    return total / one_each, total / together


def vectorised_vs_sequential(data, replicas, repeats, spec=CNN, recipe=RECIPE, wide=False):
    """img/s of vmap (or, ``wide``, of the wide CPU path, nondet.training.wide) vs one replica after
    another, in one process."""
    from nondet.training.vectorized import train_replicas_vectorized

    seeds = [replica_seeds("all", r, 0) for r in range(replicas)]
    dev, quiet = device(), (lambda *a: None)
    vec = median_time(
        lambda: train_replicas_vectorized(
            TrainRun(spec, recipe, dev), seeds, data.to(dev), Bookkeeping(log=quiet), wide=wide
        ),
        repeats,
    )
    seq = median_time(
        lambda: [train_replica(TrainRun(spec, recipe, dev), s, data.to(dev), Bookkeeping(log=quiet)) for s in seeds],
        repeats,
    )
    total = len(data.y_train) * recipe["epochs"] * replicas
    return total / vec, total / seq


# --- 3 ---
def authors_vs_ours(n_images, batch, steps, workers=4):
    """Same ResNet-14 training steps fed by the authors' style loader vs our on-device batches."""
    import torchvision.transforms as T
    from PIL import Image

    dev = device()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n_images)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

    class PilDataset(torch.utils.data.Dataset):
        tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])

        def __len__(self):
            return n_images

        def __getitem__(self, i):
            return self.tf(Image.fromarray(images[i])), int(labels[i])

    def model_and_opt():
        model = build_model(RESNET14, (3, 32, 32), 10, torch_generator(0), dev)
        return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step(model, opt, x, y):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def authors():
        model, opt = model_and_opt()
        loader = torch.utils.data.DataLoader(
            PilDataset(), batch_size=batch, shuffle=True, num_workers=workers, drop_last=True
        )
        for k, (x, y) in enumerate(loader):
            if k == steps:
                break
            step(model, opt, x.to(dev), y.to(dev))
        if dev.type == "cuda":
            torch.cuda.synchronize()

    x_all = (
        (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255) - torch.tensor(mean)[:, None, None]
    ) / torch.tensor(std)[:, None, None]
    x_all, y_all = x_all.to(dev), torch.from_numpy(labels).to(dev)

    def ours():
        model, opt = model_and_opt()
        aug = Augmenter("crop_flip", 0, n_images, 4)
        order = torch.randperm(n_images, generator=torch_generator(1)).to(dev)
        for k in range(steps):
            idx = order[k * batch : (k + 1) * batch]
            step(model, opt, aug(x_all[idx], idx, 0), y_all[idx])
        if dev.type == "cuda":
            torch.cuda.synchronize()

    n = steps * batch
    return n / median_time(authors, 1), n / median_time(ours, 1)


def data_path_only(n_images, batch, workers=4):
    """Images/s of the data path alone (no model): the authors' loader vs our batched crop+flip."""
    import torchvision.transforms as T
    from PIL import Image

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_images, 32, 32, 3), dtype=np.uint8)

    class PilDataset(torch.utils.data.Dataset):
        tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])

        def __len__(self):
            return n_images

        def __getitem__(self, i):
            return self.tf(Image.fromarray(images[i])), 0

    def authors():
        loader = torch.utils.data.DataLoader(PilDataset(), batch_size=batch, num_workers=workers)
        for _ in loader:
            pass

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().to(device()) / 255

    def ours():
        aug = Augmenter("crop_flip", 0, n_images, 4)
        idx = torch.arange(n_images, device=x.device)
        for k in range(0, n_images, batch):
            aug(x[idx[k : k + batch]], idx[k : k + batch], 0)
        if x.is_cuda:
            torch.cuda.synchronize()

    return n_images / median_time(authors, 1), n_images / median_time(ours, 3)


# --- 4 ---
def pairwise(repeats, m=100, n=10_000, k=10):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(n, k)).astype(np.float32)
    logits = (base + 0.5 * rng.normal(size=(m, n, k))).astype(np.float32)
    labels = rng.integers(0, k, n)
    mats = median_time(lambda: M.pairwise_matrices(logits, labels), repeats)
    full = median_time(lambda: M.summarize(logits, labels, None, 10_000, 0), 1)
    return mats, full


# --- 5 ---
def dry_run(configfile, repeats):
    if not (REPO / configfile).exists():
        return None, None
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "-n",
        "--quiet",
        "rules",
        "--configfile",
        str(REPO / configfile),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        out = {}

        def run():
            out["p"] = subprocess.run(cmd + ["--directory", tmp], capture_output=True, text=True)

        t = median_time(run, repeats)
    text = out["p"].stdout + out["p"].stderr
    total = [line.split()[-1] for line in text.splitlines() if line.strip().startswith("total")]
    return t, (total[-1] if total else "?")


# --- 6 ---
def determinism_cost(data, repeats):
    dev = device()

    def run(deterministic):
        seeds = replica_seeds("control" if deterministic else "kernels", 0, 0)
        recipe = {**RECIPE, "kernels_cpu_standin": False}
        train_replica(TrainRun(CNN, recipe, dev), seeds, data, Bookkeeping(log=lambda *a: None))

    return median_time(lambda: run(True), repeats), median_time(lambda: run(False), repeats)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--quick", action="store_true", help="fewer replicas and steps")
    args = ap.parse_args()
    r = args.repeats
    dev = device()
    threads = 1 if dev.type == "cpu" else 4
    torch.set_num_threads(threads)
    name = torch.cuda.get_device_name() if dev.type == "cuda" else platform.processor() or "cpu"
    print(f"# Benchmark ({time.strftime('%Y-%m-%d')})\n")
    print(f"- machine: {platform.node()}, {os.cpu_count()} CPU cores, device {dev} ({name})")
    print(
        f"- torch {torch.__version__}, python {platform.python_version()}, {threads} thread(s) per training process\n"
    )
    print("| # | what | ours | baseline | ratio |\n|---|---|---|---|---|")

    if not args.skip_e2e:
        t = e2e(1)
        print(f"| 1 | default protocol end to end (`snakemake`, empty dir) | {t:.0f} s | — | — |")

    mnist1d = {k: v for k, v in schema_defaults("dataset").items() if k in ("seed", "num_samples")}
    data = from_arrays("mnist1d", make_mnist1d(**mnist1d))
    reps = 3 if args.quick else 6
    mnist_expr = f"from_arrays('mnist1d', make_mnist1d(**{mnist1d!r}))"
    per_proc, per_job = per_process_vs_per_job(CNN, RECIPE, mnist_expr, 4000, reps, threads)
    print(
        f"| 2a | CNN on mnist1d, {reps} replicas x 1 epoch: several per job vs one per process "
        f"| {per_job:.0f} img/s | {per_proc:.0f} img/s | {per_job / per_proc:.2f}x |"
    )
    steps = 2 if args.quick else 4
    n_res = 512 * steps
    res_recipe = {**RECIPE, "batch_size": 512, "augment": "crop_flip", "augment_size": 4}
    cifar_expr = f"__import__('benchmarks.bench', fromlist=['x']).cifar_like({n_res})"
    sys.path.insert(0, str(REPO))
    per_proc, per_job = per_process_vs_per_job(RESNET14, res_recipe, cifar_expr, n_res, 2, threads)
    print(
        f"| 2b | ResNet-14, batch 512, {steps} steps x 2 replicas: several per job vs one per "
        f"process | {per_job:.0f} img/s | {per_proc:.0f} img/s | {per_job / per_proc:.2f}x |"
    )
    vec, seq = vectorised_vs_sequential(data, reps, r)
    print(
        f"| 2c | CNN on mnist1d, {reps} replicas x 1 epoch in one process: vectorised (torch.func)"
        f" vs sequential | {vec:.0f} img/s | {seq:.0f} img/s | {vec / seq:.2f}x |"
    )
    if dev.type == "cpu":
        wide, seq = vectorised_vs_sequential(data, 8, r, wide=True)
        print(
            f"| 2e | CNN on mnist1d, 8 replicas x 1 epoch in one process: one wide model "
            f"(nondet.training.wide, `auto` on CPU) vs sequential | {wide:.0f} img/s | {seq:.0f} img/s "
            f"| {wide / seq:.2f}x |"
        )
    res = cifar_like(1024)
    vec, seq = vectorised_vs_sequential(res, 2, 1, RESNET14, {**res_recipe, "batch_size": 256})
    print(
        f"| 2d | ResNet-14, batch 256, 4 steps x 2 replicas: vectorised vs sequential "
        f"| {vec:.0f} img/s | {seq:.0f} img/s | {vec / seq:.2f}x |"
    )

    authors, ours = authors_vs_ours(4096, 512, 2 if args.quick else 4)
    print(
        f"| 3a | ResNet-14 training, our batched on-device data path vs authors' (PIL "
        f"transforms, 4-worker DataLoader) | {ours:.0f} img/s | {authors:.0f} img/s "
        f"| {ours / authors:.2f}x |"
    )
    authors, ours = data_path_only(8192, 512)
    print(
        f"| 3b | data path alone (crop+flip), ours vs authors' | {ours:.0f} img/s "
        f"| {authors:.0f} img/s | {ours / authors:.1f}x |"
    )

    mats, full = pairwise(r)
    print(f"| 4a | pairwise matrices, 100 models x 10 000 examples x 10 classes | {mats:.1f} s | target 10 s | — |")
    print(
        f"| 4b | same + summary with 10 000 bootstrap resamples per metric (no CKA) | {full:.1f} s | target 10 s | — |"
    )

    t, jobs = dry_run("configs/paper.yaml", r)
    if t is None:
        print("| 5 | dry run of the paper-scale DAG | configs/paper.yaml not found | — | — |")
    else:
        print(f"| 5 | dry run of the paper-scale DAG ({jobs} jobs) | {t:.1f} s | — | — |")

    det, fast = determinism_cost(data, r)
    print(
        f"| 6 | CNN 1 epoch: deterministic vs fast kernels ({dev}) | {det:.2f} s | {fast:.2f} s | {det / fast:.2f}x |"
    )


if __name__ == "__main__":
    main()
