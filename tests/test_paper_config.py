"""configs/paper.yaml: the paper's recipe, and its full DAG listed by a dry run (nothing runs)."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from nondet.workflow import config as cfg
from nondet.workflow import plan, plan_methods

REPO = Path(__file__).resolve().parent.parent
PAPER = REPO / "configs/paper.yaml"


def merged_paper_config() -> dict:
    """config.yaml with configs/paper.yaml merged over it, as Snakemake does (then validated)."""
    from snakemake.utils import update_config

    config = yaml.safe_load(open(REPO / "config.yaml"))
    update_config(config, yaml.safe_load(open(PAPER)))
    return cfg.validate(config)


def expected_jobs(c: dict) -> dict:
    chunks = len(plan.chunks(c))
    groups = plan.groups(c)
    mit = c["mitigation"]
    n_mit = len(mit["models"]) * len(mit["conditions"])
    return {
        "train": len(groups) * chunks,
        "predict": len(groups) * chunks,
        "metrics": len(groups),
        "train_mitigation": n_mit * chunks * (len(plan_methods.training_runs(c)) - 1),  # runs of their own: snapshot
        "predict_mitigation": n_mit * chunks * len(plan_methods.mitigation_methods(c)),
        "divergence": len(c["divergence"]["models"]),
    }


def test_paper_config_plans_table_1_and_its_combined_rows_vary_exactly_their_sources():
    from dataclasses import fields

    from nondet.seeds import ReplicaSeeds

    c = merged_paper_config()
    assert "cnn" not in c["models"]  # the default's 1-D CNN is removed with `cnn: null`
    archs = {m["arch"] for m in c["models"].values()}
    assert archs == {"linear", "mlp", "resnet"}
    assert len(c["stability"]["models"]) == len(c["models"])
    table_1 = [
        "control",
        "init",
        "shuffle",
        "augment",
        "kernels",
        "shuffle_kernels",
        "shuffle_augment_kernels",
        "all",
        "bitflip",
    ]
    assert [cond for m, cond in plan.groups(c) if m == "resnet14"] == table_1
    for name, sources in (
        ("shuffle_kernels", {"shuffle", "kernels"}),
        ("shuffle_augment_kernels", {"shuffle", "augment", "kernels"}),
    ):
        seeds = [
            ReplicaSeeds(**s)
            for k in range(len(plan.chunks(c)))
            for s in plan.train_job(c, "resnet14", name, k)["seeds"]
        ]
        assert len(seeds) == 100
        varying = {f.name for f in fields(ReplicaSeeds) if len({getattr(s, f.name) for s in seeds}) == 100}
        fixed = {f.name for f in fields(ReplicaSeeds) if len({getattr(s, f.name) for s in seeds}) == 1}
        assert varying == sources and fixed == {f.name for f in fields(ReplicaSeeds)} - sources


def test_paper_bitflip_changes_exactly_one_scalar_of_the_stem_conv():
    import torch

    from nondet.seeds import replica_seeds, torch_generator
    from nondet.training.bitflip import apply_bitflip
    from nondet.training.models import build_model

    c = merged_paper_config()
    job = plan.train_job(c, "resnet14", "bitflip", 0)
    r = job["recipe"]
    for replica in job["replicas"]:
        net = build_model(job["model_spec"], (3, 32, 32), 10, torch_generator(0), init=r["init"])
        before = {k: v.clone() for k, v in net.state_dict().items()}
        flipped = apply_bitflip(net, replica_seeds("bitflip", replica, job["base_seed"]).bitflip, r["bitflip_tensor"])
        after = net.state_dict()
        changed = {k: int((before[k] != after[k]).sum()) for k in before if not torch.equal(before[k], after[k])}
        assert changed == {"stem.0.weight": 1}, changed
        old, new = before["stem.0.weight"].flatten(), after["stem.0.weight"].flatten()
        i = int((old != new).nonzero())
        assert flipped["tensor"] == "stem.0.weight"
        assert new[i].item() == float(
            np.nextafter(np.float32(old[i].item()), np.float32(np.inf if new[i] > old[i] else -np.inf))
        )


def test_paper_job_spec_carries_the_authors_recipe():
    """The validated config's training job (its spec is the provenance) builds the authors'
    ResNet-14 and schedule; the defaults (config.yaml) keep ours."""
    from nondet.seeds import torch_generator
    from nondet.training.models import build_model
    from nondet.training.replica import Schedule, param_groups

    c = merged_paper_config()
    job = plan.train_job(c, "resnet14", "bitflip", 0)
    r, spec = job["recipe"], job["model_spec"]
    assert (r["epochs"], r["batch_size"], r["lr"], r["warmup_epochs"]) == (500, 512, 0.4, 3)
    assert (r["momentum"], r["nesterov"], r["weight_decay"]) == (0.9, False, 5e-4)
    assert (r["augment"], r["augment_size"], r["bf16"]) == ("crop_flip", 4, False)
    net = build_model(spec, (3, 32, 32), 10, torch_generator(0), init=r["init"])
    assert sum(p.numel() for p in net.parameters()) == 172_602  # option A: the authors' ResNet-14
    assert r["bitflip_tensor"] in dict(net.named_parameters())  # the stem conv
    assert net.get_parameter(r["bitflip_tensor"]).shape == (16, 3, 3, 3)
    groups = param_groups(net, r)
    assert all(g["weight_decay"] == 5e-4 for g in groups if g["params"])
    assert {g["lr_scale"] for g in groups if g["params"]} == {1.0, 0.1}
    sched = Schedule(r, 50_000)  # 98 steps per epoch
    assert sched.lr(0) == 0.0 and sched.lr(3 * 98) == 0.4 and sched.lr(3 * 98 + 1) < 0.4
    assert (c["dataset"]["normalize"], c["dataset"]["pad_value"]) == ("cifar_constants", "black")
    assert list(plan_methods.mitigation_methods(c)) == [
        "tta:flip",
        "tta:crop25",
        "tta:crop81",
        "tta:flip-crop25",
        "tta:flip-crop81",
        "snapshot",
        "snapshot+tta:flip",
        "snapshot+tta:crop25",
        "snapshot+tta:crop81",
        "snapshot+tta:flip-crop25",
        "snapshot+tta:flip-crop81",
    ]
    assert plan_methods.tta_spec(c, "snapshot+tta:crop25") == {
        "kind": "crops",
        "size": 4,
        "stride": 2,
        "original": "extra",
    }
    assert c["conditions"] == {
        "shuffle_kernels": ["shuffle", "kernels"],
        "shuffle_augment_kernels": ["shuffle", "augment", "kernels"],
    }
    assert plan.train_job(c, "resnet14", "shuffle_kernels", 0)["sources"] == ["kernels", "shuffle"]
    ours = cfg.validate(yaml.safe_load(open(REPO / "config.yaml")))
    assert (
        job["data_hash"]
        == plan.data_hash(c)
        != plan.data_hash({**c, "dataset": {**c["dataset"], "normalize": "exact", "pad_value": "mean"}})
    )
    d = plan.recipe(ours, "cnn", "all")
    assert (d["init"], d["weight_decay_on"], d["lr_scale_bias_bn"], d["schedule"]) == (
        "pytorch",
        "weights",
        1.0,
        "cosine_restart",
    )
    assert (ours["dataset"]["normalize"], ours["dataset"]["pad_value"]) == ("exact", "mean")
    bad = yaml.safe_load(open(PAPER))
    bad["models"]["resnet14"]["params"]["shortcut"] = "option_b"
    with pytest.raises(cfg.ConfigError, match="models.resnet14.params.shortcut"):
        cfg.validate({**yaml.safe_load(open(REPO / "config.yaml")), **bad})


@pytest.mark.slow
def test_paper_dry_run_lists_full_dag(tmp_path):
    """`snakemake -n --configfile configs/paper.yaml` plans every job, GPU jobs asking gpu=1."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")  # an empty results/ folder
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(PAPER),
        "-n",
    ]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.perf_counter() - t0
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", text.split("Job stats:")[1], re.M))
    total = int(stats.pop("total"))
    assert total > 800, total
    for rule, n in expected_jobs(merged_paper_config()).items():
        assert int(stats[rule]) == n, (rule, stats[rule], n)
    assert total == sum(int(v) for v in stats.values())
    # every training/prediction job asks for a GPU, no other job does
    blocks = re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", text)
    checked = 0
    for block in blocks:
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if not rule:
            continue
        checked += 1
        gpu = "gpu=1" in block
        assert gpu == (rule.group(1) in ("train", "predict", "divergence", "train_mitigation", "predict_mitigation")), (
            block
        )
    assert checked == total
    print(f"paper dry run: {total} jobs in {seconds:.1f}s")  # a figure to read, not a timed assertion


@pytest.mark.slow
def test_paper_cpu_config_validates_and_plans(tmp_path):
    """configs/paper_cpu.yaml: the authors' recipe on a Fashion-MNIST subset, planned on CPU."""
    from snakemake.utils import update_config

    config = yaml.safe_load(open(REPO / "config.yaml"))
    update_config(config, yaml.safe_load(open(REPO / "configs/paper_cpu.yaml")))
    c = cfg.validate(config)
    assert list(c["models"]) == ["resnet14"] and c["device"] == "cpu"
    job = plan.train_job(c, "resnet14", "shuffle_augment_kernels", 0)
    assert job["model_spec"]["shortcut"] == "option_a" and job["recipe"]["schedule"] == "authors"
    assert job["sources"] == ["augment", "kernels", "shuffle"]
    assert list(plan_methods.mitigation_methods(c)) == [
        "tta:flip",
        "tta:crop25",
        "snapshot",
        "snapshot+tta:flip",
        "snapshot+tta:crop25",
    ]
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(REPO / "configs/paper_cpu.yaml"),
        "-n",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", (out.stdout + out.stderr).split("Job stats:")[1], re.M))
    assert int(stats["train"]) == 9 and int(stats["predict_mitigation"]) == 5
