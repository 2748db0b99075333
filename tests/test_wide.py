"""The wide CPU path (nondet.training.wide): K cnn1d replicas as one grouped, channels-last model."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nondet.io import files
from nondet.seeds import replica_seeds, torch_generator
from nondet.training import wide
from nondet.training.data import load_dataset
from nondet.training.models import build_model
from nondet.training.recipe import Bookkeeping, TrainRun
from nondet.training.replica import train_replica
from nondet.training.vectorized import train_replicas_vectorized
from nondet.workflow import analysis_stages, plan, torch_stages
from nondet.workflow import config as cfg

CPU = torch.device("cpu")


def same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _stack(models):
    params = {n: torch.stack([m.get_parameter(n).detach() for m in models]) for n, _ in models[0].named_parameters()}
    buffers = {n: torch.stack([m.get_buffer(n).clone() for m in models]) for n, _ in models[0].named_buffers()}
    return params, buffers


@pytest.mark.parametrize("training", [True, False], ids=["train-mode", "eval-mode"])
def test_wide_forward_and_gradients_are_the_replicas_own(cnn_spec, training):
    """Same function as K separate CNN1d (logits, per-replica gradients, BatchNorm running
    statistics and batch counters): up to float rounding, as the summation orders differ."""
    k, b = 3, 16
    models = [build_model(cnn_spec, (1, 40), 10, torch_generator(s)) for s in range(k)]
    for m in models:  # other running statistics than the initial ones, to test eval mode
        m.train()
        m.dropout.external_mask = torch.ones(32, cnn_spec["channels"])
        m(torch.randn(32, 1, 40, generator=torch_generator(99)))
        m.dropout.external_mask = None
    params, buffers = _stack(models)
    for p in params.values():
        p.requires_grad_(True)
    x = torch.randn(k, b, 1, 40, generator=torch_generator(1))
    y = torch.randint(0, 10, (k, b), generator=torch_generator(2))
    masks = (torch.rand(k, b, cnn_spec["channels"], generator=torch_generator(3)) > cnn_spec["dropout"]).float()
    out = wide.forward(params, buffers, {"dropout.external_mask": masks}, x, training, cnn_spec)
    assert out.shape == (k, b, 10)
    loss = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(k, -1).mean(1)
    grads = torch.autograd.grad(loss.sum(), list(params.values()))
    for r, m in enumerate(models):
        m.train(training)
        if training:
            m.dropout.external_mask = masks[r]
        ref = m(x[r])
        m.dropout.external_mask = None
        assert torch.allclose(out[r], ref, rtol=1e-4, atol=1e-5)
        ref_grads = torch.autograd.grad(F.cross_entropy(ref, y[r]), list(m.parameters()))
        for g, rg in zip(grads, ref_grads):
            assert torch.allclose(g[r], rg, rtol=1e-3, atol=1e-5)
        for name, buf in m.named_buffers():
            assert torch.allclose(buffers[name][r].to(buf.dtype), buf, rtol=1e-5, atol=1e-6), name


def test_wide_replica_depends_on_its_own_seeds_only(small_data, recipe, cnn_spec):
    """Replica 0 ends bitwise the same whichever replicas share its chunk (same chunk size);
    replicas of control trained together are bitwise identical."""

    def run(cond, rs):
        return train_replicas_vectorized(
            TrainRun(cnn_spec, recipe, CPU),
            [replica_seeds(cond, r, 0) for r in rs],
            small_data,
            Bookkeeping(log=lambda *a: None),
            wide=True,
        )

    a, b = run("all", [0, 1, 2]), run("all", [0, 5, 6])
    assert same(a[0]["state"], b[0]["state"])
    assert not same(a[1]["state"], b[1]["state"])
    control = run("control", [0, 1, 2])
    assert all(same(control[0]["state"], c["state"]) for c in control[1:])


def test_wide_refuses_other_models(small_data, recipe):
    with pytest.raises(ValueError, match="cnn1d only"):
        train_replicas_vectorized(
            TrainRun({"arch": "linear"}, recipe, CPU), [replica_seeds("init", 0, 0)], small_data, wide=True
        )


def _seeds(condition):
    return [replica_seeds(condition, r, 0) for r in range(2)]


@pytest.mark.parametrize(
    "vectorize, device, arch, condition, path",
    [
        ("auto", "cpu", "cnn1d", "init", "wide"),
        ("auto", "cpu", "cnn1d", "kernels", "wide"),  # CPU kernels: per-replica stand-in
        ("auto", "cpu", "linear", "init", "sequential"),
        ("auto", "cuda", "cnn1d", "init", "vmap"),
        ("auto", "cuda", "cnn1d", "kernels", "sequential"),  # a chunk would share kernel calls
        ("on", "cpu", "cnn1d", "init", "vmap"),
        ("off", "cpu", "cnn1d", "init", "sequential"),
    ],
)
def test_training_path(vectorize, device, arch, condition, path, recipe):
    job = {"vectorize": vectorize, "recipe": recipe, "model_spec": {"arch": arch}}
    assert torch_stages.vectorization(job, torch.device(device), _seeds(condition)) == path
    assert (
        torch_stages.vectorization({**job, "recipe": {**recipe, "bf16": True}}, torch.device("cpu"), _seeds(condition))
        != "wide"
    )


@pytest.mark.slow
def test_train_stage_trains_cnn1d_wide_by_default_on_cpu(tmp_path):
    """`vectorize: auto` on a CPU: the default CNN trains as one wide model, `off` one replica
    after another; the two differ (other kernels) but each is what its path computes."""
    c = cfg.validate(
        {
            "replicas": 2,
            "replicas_per_job": 2,
            "dataset": {"num_samples": 600},
            "training": {"epochs": 1, "eval_every": 0},
            "models": {"m": {"arch": "cnn1d", "params": {"channels": 8}, "conditions": ["init"]}},
        }
    )
    data = tmp_path / "d.h5"
    analysis_stages.dataset(data, plan.data_spec(c), plan.data_hash(c))
    job = plan.train_job(c, "m", "init", 0)
    assert job["vectorize"] == "auto"
    torch_stages.train(data, tmp_path / "wide.h5", job, tmp_path / "wide.log", checkpoint_every=0)
    torch_stages.train(data, tmp_path / "seq.h5", {**job, "vectorize": "off"}, tmp_path / "seq.log", checkpoint_every=0)
    assert "as one wide model" in (tmp_path / "wide.log").read_text()
    assert "together" not in (tmp_path / "seq.log").read_text()
    fast, seq = files.load_replicas(tmp_path / "wide.h5"), files.load_replicas(tmp_path / "seq.h5")
    spec, recipe, d = job["model_spec"], job["recipe"], load_dataset(data, job["data_hash"])
    alone = train_replica(TrainRun(spec, recipe, CPU), replica_seeds("init", 1, 0), d, Bookkeeping(log=lambda *a: None))
    assert same(seq[1]["weights"], alone["state"])
    together = train_replicas_vectorized(
        TrainRun(spec, recipe, CPU),
        [replica_seeds("init", r, 0) for r in (0, 1)],
        d,
        Bookkeeping(log=lambda *a: None),
        wide=True,
    )
    assert same(fast[1]["weights"], together[1]["state"])
