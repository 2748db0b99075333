"""CIFAR-10: the pickle release's format, checksums, normalisation on the device, and a tiny
stand-in written locally (never the network) run through the real data rule and a small ResNet.
The paper slice's run is also configs/paper.yaml's smoke run: every rule of its full DAG runs
(tests/test_config_dags.py leaves this config to this file, its RUN_ELSEWHERE)."""

import copy
import csv
import tarfile

import numpy as np
import pytest
import torch
import yaml
from helpers import REPO, default_config, snakemake
from test_config_dags import SMALL_PARAMS, check_covers_reduction, check_every_rule_ran, run_targets

from nondet.io import checksums, cifar
from nondet.io import datasets as D
from nondet.training.data import channel_stats, from_arrays
from nondet.workflow import analysis_stages
from nondet.workflow.torch_stages import train

PAPER = REPO / "configs/paper.yaml"
DAG_CONFIGS = (PAPER,)  # tests/test_config_dags.py RUN_ELSEWHERE


def write_tiny_cifar(root, n_train=16, n_test=24, seed=0):
    """A tiny CIFAR-10 in the release's on-disk format; returns {file: md5}."""
    rng = np.random.default_rng(seed)
    folder = root / cifar.CIFAR10_FOLDER
    for name in cifar.CIFAR10_TRAIN + ["test_batch"]:
        n = n_test if name == "test_batch" else n_train
        y = rng.integers(0, 10, n)
        # class-dependent colour so that a small net learns something in a few steps
        x = rng.integers(0, 128, (n, 3, 32, 32)) + (y * 12)[:, None, None, None]
        cifar.write_cifar_batches(folder, x.astype(np.uint8), y, name)
    return {n: checksums.md5sum(folder / n) for n in cifar.CIFAR10_MD5}


def test_constants_agree_with_torchvision():
    from torchvision.datasets import CIFAR10

    assert cifar.CIFAR10_URL == CIFAR10.url and cifar.CIFAR10_ARCHIVE == CIFAR10.filename
    assert cifar.CIFAR10_ARCHIVE_MD5 == CIFAR10.tgz_md5 and cifar.CIFAR10_FOLDER == CIFAR10.base_folder
    assert cifar.CIFAR10_MD5 == dict(CIFAR10.train_list + CIFAR10.test_list)


def test_reads_pickle_format_and_checks_md5(tmp_path):
    md5 = write_tiny_cifar(tmp_path)
    arrays = cifar.make_cifar10(tmp_path, md5=md5, log=lambda *_: None)
    assert arrays["x_train"].shape == (80, 3, 32, 32) and arrays["x_train"].dtype == np.uint8
    assert arrays["x_test"].shape == (24, 3, 32, 32) and arrays["y_test"].dtype == np.int64
    # same bytes as torchvision's own reader of the format
    from torchvision.datasets import CIFAR10

    class Tiny(CIFAR10):
        train_list = [[n, md5[n]] for n in cifar.CIFAR10_TRAIN]
        test_list = [["test_batch", md5["test_batch"]]]
        meta = {"filename": "data_batch_1", "key": "batch_label", "md5": md5["data_batch_1"]}

        def _load_meta(self):
            self.classes = [str(i) for i in range(10)]

    tv = Tiny(str(tmp_path), train=True)
    assert np.array_equal(tv.data, arrays["x_train"].transpose(0, 2, 3, 1))
    assert np.array_equal(np.asarray(tv.targets), arrays["y_train"])

    bad = {**md5, "data_batch_3": "0" * 32}
    with pytest.raises(checksums.DataError, match="data_batch_3: MD5"):
        cifar.make_cifar10(tmp_path, md5=bad, log=lambda *_: None)
    # the official sums (the default) reject the stand-in
    with pytest.raises(checksums.DataError, match="MD5"):
        cifar.fetch_cifar10(tmp_path, log=lambda *_: None)
    (tmp_path / cifar.CIFAR10_FOLDER / "test_batch").unlink()
    with pytest.raises(checksums.DataError, match="lacks test_batch.*dataset.download"):
        cifar.fetch_cifar10(tmp_path, md5=md5, log=lambda *_: None)


def test_existing_archive_is_extracted(tmp_path):
    src = tmp_path / "src"
    md5 = write_tiny_cifar(src)
    root = tmp_path / "copy"
    root.mkdir()
    with tarfile.open(root / cifar.CIFAR10_ARCHIVE, "w:gz") as tar:
        tar.add(src / cifar.CIFAR10_FOLDER, arcname=cifar.CIFAR10_FOLDER)
    assert cifar.fetch_cifar10(root, md5=md5, log=lambda *_: None) == root / cifar.CIFAR10_FOLDER
    # with the official sums the archive's own MD5 is checked first
    (root / cifar.CIFAR10_FOLDER / "test_batch").unlink()
    with pytest.raises(checksums.DataError, match="cifar-10-python.tar.gz: MD5"):
        cifar.fetch_cifar10(root, log=lambda *_: None)


def test_uint8_images_normalised_per_channel_on_device(tmp_path):
    md5 = write_tiny_cifar(tmp_path)
    arrays = cifar.make_cifar10(tmp_path, md5=md5, log=lambda *_: None)
    ds = from_arrays("cifar10", arrays)
    assert ds.x_train.dtype == torch.float32 and ds.input_shape == (3, 32, 32)
    mean = ds.x_train.double().mean((0, 2, 3))
    std = ds.x_train.double().std((0, 2, 3), correction=0)
    assert torch.allclose(mean, torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(std, torch.ones(3, dtype=torch.float64), atol=1e-5)
    m, s = channel_stats(arrays["x_train"])
    ref = arrays["x_train"].astype(np.float64)
    assert np.allclose(m, ref.mean((0, 2, 3))) and np.allclose(s, ref.std((0, 2, 3)))


@pytest.mark.slow
def test_data_stage_writes_uint8_h5(tmp_path):
    md5 = write_tiny_cifar(tmp_path)
    spec = {"name": "cifar10", "path": str(tmp_path), "md5": md5}
    analysis_stages.dataset(tmp_path / "cifar10.h5", spec, "h")
    import h5py

    with h5py.File(tmp_path / "cifar10.h5") as f:
        assert f["x_train"].dtype == np.uint8 and f["x_train"].shape == (80, 3, 32, 32)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU failure")
def test_gpu_requested_but_absent_fails_before_anything(tmp_path):
    job = {"device": "cuda", "data_hash": "x"}  # data file absent: the device check comes first
    with pytest.raises(RuntimeError, match="no CUDA GPU is visible"):
        train(tmp_path / "missing.h5", tmp_path / "out.h5", job)
    assert not (tmp_path / "out.h5").exists()


def paper_slice_config(cifar_root, md5) -> dict:
    """configs/paper.yaml merged over config.yaml (as Snakemake does), cut to a CPU slice: the
    authors' recipe, Table 1's conditions and the five TTA sets, 2 replicas, 2 epochs (the
    snapshot run needs 2 cycles), ResNet-14 only (its 2 blocks per stage and option-A shortcut,
    at width 4 instead of 16: the jobs' compute, not the DAG, shrinks), no twins."""
    from snakemake.utils import update_config

    config = default_config()
    update_config(config, yaml.safe_load(PAPER.read_text()))
    update_config(
        config,
        {
            "device": "cpu",
            "replicas": 2,
            "replicas_per_job": 2,
            "threads_per_job": 1,
            "checkpoint_every": 0,
            "dataset": {"path": str(cifar_root), "md5": md5, "download": False},
            "training": {"epochs": 2, "batch_size": 40, "warmup_epochs": 1, "eval_every": 1},
            "divergence": {"models": []},
            "stability": {"models": []},
            "mitigation": {"snapshot_cycles": 2},
            "metrics": {"bootstrap_resamples": 50},
        },
    )
    for name in list(config["models"]):
        if name != "resnet14":
            config["models"][name] = None
    config["models"]["resnet14"]["params"]["width"] = 4
    return config


def paper_dag_config(cifar_root, md5) -> dict:
    """The slice (:func:`paper_slice_config`) plus what configs/paper.yaml's reduction in
    tests/test_config_dags.py trains beyond it, so that it runs every rule of paper.yaml's full DAG:
    the twins of ResNet-14 (one of each kind paper.yaml names, 4 record points), the stability
    sweep of the models kept, and the linear model and the MLP with bitflip only, each flipping the
    tensor paper.yaml names for it (the MLP at SMALL_PARAMS' width)."""
    config = paper_slice_config(cifar_root, md5)
    paper = yaml.safe_load(PAPER.read_text())
    for name in ("linear", "mlp"):
        spec = copy.deepcopy(paper["models"][name])
        spec["params"] = {**spec.get("params", {}), **SMALL_PARAMS.get(spec["arch"], {})}
        spec["conditions"] = ["bitflip"]
        config["models"][name] = spec
    kept = [m for m, spec in config["models"].items() if spec]
    config["divergence"].update(
        models=paper["divergence"]["models"], twins={kind: 1 for kind in paper["divergence"]["twins"]}, record_points=4
    )
    config["stability"] = {"models": [m for m in paper["stability"]["models"] if m in kept]}
    return config


@pytest.mark.slow
def test_paper_slice_runs_on_cpu(tmp_path):
    """The paper DAG's slice end to end from the release-format files: the dataset rule checks
    their MD5s, Table 1's conditions train with the authors' recipe, every TTA set predicts, and
    the comparison table sets the published numbers beside ours. The same run is configs/paper.yaml's
    smoke run (:func:`paper_dag_config`): it planned exactly the rules of paper.yaml's full DAG and
    ran each, it trains every kind that the file's reduction in tests/test_config_dags.py would, the
    linear model and the MLP flip the tensors paper.yaml names, and the HTML report builds.

    The slice runs CIFAR-10 with the paper's settings only (option-A shortcut, the authors'
    recipe, cifar_constants normalisation, black crop padding); config.yaml's values for these
    (conv shortcut, our recipe, exact normalisation, mean padding) are other values of the same
    keys through the same stages, and each branch is tested in-process:
    test_uint8_images_normalised_per_channel_on_device (exact, on CIFAR's uint8 batches),
    tests/test_paper_recipe.py (both normalisations and paddings, both shortcuts, both inits),
    tests/test_training.py::test_bf16_and_channels_last_are_optional_and_change_results (a
    conv-shortcut ResNet trained with crop_flip and mean padding, bitwise repeatable)."""
    import json

    import h5py

    md5 = write_tiny_cifar(tmp_path / "cifar")
    config = paper_dag_config(tmp_path / "cifar", md5)
    work, plan_dir = tmp_path / "work", tmp_path / "plan"
    work.mkdir(), plan_dir.mkdir()
    targets = run_targets(PAPER)  # all and paper_comparison.csv
    targets += [t for t in ("results/tables/diversity.csv", "results/tables/mitigation.csv") if t not in targets]
    out = snakemake(work, "--cores", "2", *targets, config=config)
    check_every_rule_ran(PAPER, out, plan_dir, exact=True)
    check_covers_reduction(PAPER, config, tmp_path / "stand-in")
    snakemake(work, "--report", "results/report.html", *targets, config=config)  # captions, report() outputs
    assert (work / "results/report.html").stat().st_size > 0
    all_rows = list(csv.DictReader(open(work / "results/tables/diversity.csv")))
    assert {(r["model"], r["condition"]) for r in all_rows if r["model"] != "resnet14"} == {
        ("linear", "bitflip"),
        ("mlp", "bitflip"),
    }
    rows = [r for r in all_rows if r["model"] == "resnet14"]
    assert [r["condition"] for r in rows] == [
        "control",
        "init",
        "shuffle",
        "augment",
        "kernels",
        "all",
        "bitflip",
        "shuffle_kernels",
        "shuffle_augment_kernels",
    ]
    by = {r["condition"]: r for r in rows}
    assert int(float(by["control"]["n_identical_pairs"])) == 1  # bitwise identical replicas
    assert float(by["control"]["disagreement"]) == 0.0
    assert float(by["augment"]["disagreement"]) > 0.0  # crops and flips differ per replica
    assert "verified MD5 of 6 files" in (work / "logs/dataset.log").read_text()
    for c in ("kernels", "shuffle_kernels", "shuffle_augment_kernels", "all"):
        assert by[c]["kernels_mode"] == "cpu-standin-batch-permutation", c
    # the job spec (provenance) of a training file carries the authors' choices
    with h5py.File(work / "results/train/resnet14/shuffle_kernels/chunk0.h5") as f:
        job = json.loads(f.attrs["provenance"])["job"]
        seeds = [json.loads(f[g].attrs["seeds"]) for g in sorted(f) if g.startswith("replica_")]
    assert job["model_spec"]["shortcut"] == "option_a" and job["sources"] == ["kernels", "shuffle"]
    r = job["recipe"]
    assert (r["init"], r["weight_decay_on"], r["lr_scale_bias_bn"], r["schedule"]) == (
        "kaiming_normal_fan_out",
        "all",
        0.1,
        "authors",
    )
    assert r["bitflip_tensor"] == "stem.0.weight"
    differ = {k for k in seeds[0] if seeds[0][k] != seeds[1][k]}
    assert differ == {"shuffle", "kernels"}
    with h5py.File(work / "results/train/resnet14/bitflip/chunk0.h5") as f:
        flips = [json.loads(f[g].attrs["bitflip"]) for g in sorted(f) if g.startswith("replica_")]
    assert all(fl["tensor"] == "stem.0.weight" for fl in flips), flips
    # the linear model and the MLP flip their own first weight, as paper.yaml names it (once it
    # named the ResNets' stem conv for them, which raised at their first step)
    for model, tensor in (("linear", "fc.weight"), ("mlp", "hidden.weight")):
        with h5py.File(work / f"results/train/{model}/bitflip/chunk0.h5") as f:
            flips = [json.loads(f[g].attrs["bitflip"]) for g in sorted(f) if g.startswith("replica_")]
        assert flips and all(fl["tensor"] == tensor for fl in flips), (model, flips)
    mit = {r["method"]: r for r in csv.DictReader(open(work / "results/tables/mitigation.csv"))}
    passes = {"flip": 2, "crop25": 26, "crop81": 82, "flip-crop25": 51, "flip-crop81": 163}
    assert set(mit) == {"plain", "snapshot"} | {f"{m}:{n}" for m in ("tta", "snapshot+tta") for n in passes}
    for name, n in passes.items():
        assert int(mit[f"tta:{name}"]["test_passes"]) == n
        assert int(mit[f"snapshot+tta:{name}"]["test_passes"]) == 2 * n
    # the published numbers beside ours, converted to the paper's conventions
    comp = {(r["method"], r["metric"]): r for r in csv.DictReader(open(work / "results/tables/paper_comparison.csv"))}
    published = list(csv.DictReader(open(REPO / "paper/expected.csv")))
    assert set(comp) == {
        (e["method"], e["metric"]) for e in published if e["table"] == "diversity" or e["method"] in mit
    }
    assert ("snapshot+tta:flip-crop81", "variability_reduction") in comp  # the paper's 61 %
    sd = float(comp[("plain", "acc_sd")]["ours"])
    assert sd == pytest.approx(float(by["all"]["acc_sd"]) * (1 / 2) ** 0.5)  # ddof 1 -> 0, n = 2
    assert float(comp[("plain", "disagreement")]["ours"]) == pytest.approx(float(by["all"]["disagreement"]))


class _Payload:
    """Unpickling this calls os.system: the classic pickled payload."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_payload_batch_with_a_matching_config_md5_runs_nothing(tmp_path):
    """A config whose dataset.md5 matches a batch holding a pickled payload: refused before
    anything runs, naming the file (the checksum vouches for nothing the config chose)."""
    import pickle

    md5 = write_tiny_cifar(tmp_path)
    marker = tmp_path / "ran"
    batch = tmp_path / cifar.CIFAR10_FOLDER / "data_batch_3"
    with open(batch, "wb") as f:
        pickle.dump({"data": _Payload(marker), "labels": [0]}, f, protocol=2)
    md5["data_batch_3"] = checksums.md5sum(batch)  # the config's checksum lines match the payload
    spec = {"name": "cifar10", "path": str(tmp_path), "md5": md5}
    with pytest.raises(
        checksums.DataError, match=r"data_batch_3: not a batch of the CIFAR python release.*posix.system"
    ):
        D.make_dataset_arrays(spec, log=lambda *_: None)
    with pytest.raises(checksums.DataError, match="data_batch_3"):
        analysis_stages.dataset(tmp_path / "cifar10.h5", spec, "h")
    assert not marker.exists()
    assert not (tmp_path / "cifar10.h5").exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_the_restricted_unpickler_reads_the_release_format_in_every_protocol(tmp_path, protocol):
    import pickle

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    path = tmp_path / "batch"
    with open(path, "wb") as f:
        pickle.dump(
            {"batch_label": "b", "labels": [1, 2, 0], "data": x.reshape(3, -1), "filenames": ["a"]}, f, protocol
        )
    got_x, got_y = cifar.load_batch(path, "labels")
    assert np.array_equal(got_x, x) and got_y.tolist() == [1, 2, 0] and got_y.dtype == np.int64


@pytest.mark.parametrize(
    "payload",
    [
        "builtins.eval",  # a global outside the allow-list
        "object array",  # an object array whose items are payloads
    ],
)
def test_other_payloads_are_refused(tmp_path, payload):
    import pickle

    marker = tmp_path / "ran"
    if payload == "builtins.eval":

        class Eval:
            def __reduce__(self):
                return (eval, (f"open({str(marker)!r}, 'w')",))

        obj = {"data": Eval(), "labels": [0]}
    else:
        arr = np.empty(1, dtype=object)
        arr[0] = _Payload(marker)
        obj = {"data": arr, "labels": [0]}
    path = tmp_path / "batch"
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    with pytest.raises(checksums.DataError, match="refused global"):
        cifar.load_batch(path, "labels")
    assert not marker.exists()
