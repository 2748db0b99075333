import inspect

import numpy as np
import pytest
import torch

from nondet.seeds import replica_seeds, torch_generator
from nondet.training.bitflip import apply_bitflip
from nondet.training.models import ARCHITECTURES, build_model
from nondet.training.predict import predict
from nondet.training.recipe import TrainRun
from nondet.training.replica import lr_at, train_replica
from nondet.workflow.config_checks import ARCH_PARAMS

CPU = torch.device("cpu")


def weights_equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_two_control_replicas_are_bitwise_identical(small_data, recipe, cnn_spec):
    runs = [train_replica(TrainRun(cnn_spec, recipe, CPU), replica_seeds("control", r, 0), small_data) for r in (0, 1)]
    assert weights_equal(runs[0]["state"], runs[1]["state"])
    logits = [predict(r["model"], small_data.x_test)[0] for r in runs]
    assert torch.equal(logits[0], logits[1])
    other = train_replica(TrainRun(cnn_spec, recipe, CPU), replica_seeds("init", 1, 0), small_data)
    assert not weights_equal(runs[0]["state"], other["state"])


@pytest.mark.parametrize("condition", ["shuffle", "augment", "dropout"])
def test_each_data_level_source_changes_the_trained_model(small_data, recipe, cnn_spec, condition):
    """These sources change what the model sees (order, inputs, masks): far above rounding, so
    the trained weights differ on any CPU. The kernels stand-in and the one-ulp flip act at
    rounding level, where only their mechanism is guaranteed (tests below)."""
    a, b = (train_replica(TrainRun(cnn_spec, recipe, CPU), replica_seeds(condition, r, 0), small_data) for r in (0, 1))
    assert not weights_equal(a["state"], b["state"])


def test_kernels_standin_permutes_within_batches_only(small_data, recipe, cnn_spec, monkeypatch):
    import nondet.training.replica as training

    original = training.ReplicaDraws

    def batches(seeds):
        seen = []

        class Recording(original):
            def batch(self, order, epoch, b, data):
                out = super().batch(order, epoch, b, data)
                seen.append(out[0].clone())
                return out

        monkeypatch.setattr(training, "ReplicaDraws", Recording)
        train_replica(TrainRun(cnn_spec, recipe, CPU), seeds, small_data)
        return seen

    base, permuted = batches(replica_seeds("control", 0, 0)), batches(replica_seeds("kernels", 0, 0))
    assert len(base) == len(permuted)
    assert all(torch.equal(a.sort().values, b.sort().values) for a, b in zip(base, permuted))
    assert sum(not torch.equal(a, b) for a, b in zip(base, permuted)) == len(base)


def test_one_ulp_flip_survives_where_nothing_moves(small_data, recipe, cnn_spec):
    """A flip that provably survives: with lr 0 no parameter moves, so the final weights differ
    from the unperturbed run's in exactly the flipped scalar (whether it survives real training
    depends on the CPU's rounding; the pipeline counts absorbed flips instead of assuming)."""
    still = {**recipe, "lr": 0.0}
    flipped = train_replica(TrainRun(cnn_spec, still, CPU), replica_seeds("bitflip", 0, 0), small_data)
    plain = train_replica(TrainRun(cnn_spec, still, CPU), replica_seeds("control", 0, 0), small_data)
    info = flipped["bitflip"]
    changed = {k for k in plain["state"] if not np.array_equal(plain["state"][k], flipped["state"][k])}
    assert info["tensor"] in changed
    a, b = plain["state"][info["tensor"]].ravel(), flipped["state"][info["tensor"]].ravel()
    assert np.flatnonzero(a != b).tolist() == [info["index"]] and b[info["index"]] == info["new"]


def test_bitflip_tensor_targets_one_named_parameter(cnn_spec):
    picks = set()
    for seed in range(30):
        base = build_model(cnn_spec, (1, 40), 10, torch_generator(5))
        m = build_model(cnn_spec, (1, 40), 10, torch_generator(5))
        info = apply_bitflip(m, seed, tensor="body.0.weight")
        a = {k: v.numpy() for k, v in base.state_dict().items()}
        b = {k: v.numpy() for k, v in m.state_dict().items()}
        changed = [(k, np.flatnonzero(a[k] != b[k])) for k in a if (a[k] != b[k]).any()]
        assert [(k, list(i)) for k, i in changed] == [("body.0.weight", [info["index"]])]
        assert info["target"] == info["tensor"] == "body.0.weight"
        picks.add(info["index"])
    assert len(picks) > 15  # the scalar is drawn within the tensor (160 of them)
    with pytest.raises(ValueError, match=r"'stem.0.weight' is not a parameter.*body.0.weight"):
        apply_bitflip(build_model(cnn_spec, (1, 40), 10, torch_generator(5)), 0, "stem.0.weight")


def test_training_never_touches_global_rng(small_data, recipe, cnn_spec):
    torch.manual_seed(0)
    np.random.seed(0)
    before_torch, before_np = torch.get_rng_state(), np.random.get_state()[1].copy()
    train_replica(TrainRun(cnn_spec, recipe, CPU), replica_seeds("all", 1, 0), small_data)
    assert torch.equal(torch.get_rng_state(), before_torch)
    assert np.array_equal(np.random.get_state()[1], before_np)


BUILT_IN = {  # one spec per built-in architecture and input shape
    "linear": ({"arch": "linear"}, (1, 40)),
    "mlp": ({"arch": "mlp", "hidden": 16}, (1, 40)),
    "cnn1d": ({"arch": "cnn1d", "channels": 8, "dropout": 0.1}, (1, 40)),
    "resnet": ({"arch": "resnet", "width": 4, "blocks": 1}, (3, 16, 16)),
    "resnet-option-a": ({"arch": "resnet", "width": 4, "blocks": 1, "shortcut": "option_a"}, (3, 16, 16)),
}


@pytest.mark.parametrize("init", ["pytorch", "kaiming_normal_fan_out"])
@pytest.mark.parametrize("name", list(BUILT_IN))
def test_every_parameter_and_buffer_comes_from_the_generator_not_the_global_rng(name, init):
    """build_model constructs with PyTorch's default init inside fork_rng, then sets every tensor
    from the generator: whatever the global RNG's state, the same generator seed gives the same
    model bitwise, and the global RNG is left as it was."""
    assert set(BUILT_IN) - {"resnet-option-a"} == set(ARCHITECTURES)  # a new architecture: add it above
    spec, shape = BUILT_IN[name]
    models = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        models.append(build_model(spec, shape, 10, torch_generator(7), init=init))
        assert torch.equal(torch.get_rng_state(), before)
    state = lambda m: {k: v.numpy() for k, v in m.state_dict().items()}  # noqa: E731
    a, b = (state(m) for m in models)
    assert weights_equal(a, b)
    assert not weights_equal(a, state(build_model(spec, shape, 10, torch_generator(8), init=init)))


def test_bitflip_changes_exactly_one_scalar_by_one_ulp(cnn_spec):
    build = lambda: build_model(cnn_spec, (1, 40), 10, torch_generator(5))  # noqa: E731
    base, flipped = build(), build()
    info = apply_bitflip(flipped, seed=11)
    a = {k: v.numpy() for k, v in base.state_dict().items()}
    b = {k: v.numpy() for k, v in flipped.state_dict().items()}
    diffs = [(k, np.flatnonzero(a[k] != b[k])) for k in a]
    changed = [(k, idx) for k, idx in diffs if len(idx)]
    assert len(changed) == 1 and len(changed[0][1]) == 1
    name, (index,) = changed[0]
    assert name == info["tensor"] and index == info["index"]
    old, new = a[name].ravel()[index], b[name].ravel()[index]
    assert old.dtype == np.float32
    assert new == np.nextafter(old, np.float32(np.inf * info["direction"]))
    assert abs(np.float64(new) - np.float64(old)) == np.spacing(np.float32(min(abs(old), abs(new))))


def test_bitflip_choices_vary_with_seed(cnn_spec):
    picks = set()
    for seed in range(20):
        m = build_model(cnn_spec, (1, 40), 10, torch_generator(5))
        info = apply_bitflip(m, seed)
        picks.add((info["tensor"], info["index"], info["direction"]))
    assert len(picks) > 10


def test_lr_schedule_cosine_cycles_and_warmup():
    total, peak = 100, 0.4
    lrs = [lr_at(s, total, peak) for s in range(total)]
    assert lrs[-1] == 0 and max(lrs) < peak and all(a >= b for a, b in zip(lrs, lrs[1:]))
    cyc = [lr_at(s, total, peak, warmup_steps=5, cycles=4) for s in range(total)]
    for end in (24, 49, 74, 99):  # the last step of every cycle is the snapshot point: lr 0
        assert cyc[end] == pytest.approx(0.0, abs=1e-12)
        assert min(cyc[end - 24 : end + 1]) == cyc[end]
    assert cyc[4] == pytest.approx(peak) and cyc[25] == pytest.approx(peak / 5)
    with pytest.raises(ValueError, match="equal cycles"):
        lr_at(0, 100, peak, cycles=3)


def test_arch_params_match_model_signatures():
    for arch, params in ARCH_PARAMS.items():
        sig = inspect.signature(ARCHITECTURES[arch])
        names = [n for n in sig.parameters if n not in ("in_shape", "num_classes")]
        assert names == list(params), arch
        for name, default in params.items():
            expected = sig.parameters[name].default
            assert (list(expected) if isinstance(expected, tuple) else expected) == default


def test_default_cnn_size_and_linear_outputs(small_data):
    cnn = build_model({"arch": "cnn1d", **ARCH_PARAMS["cnn1d"]}, (1, 40), 10, torch_generator(0))
    assert sum(p.numel() for p in cnn.parameters()) == 6826
    lin = build_model({"arch": "linear"}, (1, 40), 10, torch_generator(0))
    feats, logits = lin.forward_with_features(small_data.x_test)
    assert torch.equal(feats, logits) and logits.shape == (len(small_data.x_test), 10)


def test_resnet_forward_shapes():
    net = build_model({"arch": "resnet", "blocks": 1, "width": 4}, (3, 16, 16), 10, torch_generator(0))
    feats, logits = net.forward_with_features(torch.zeros(2, 3, 16, 16))
    assert feats.shape == (2, 16) and logits.shape == (2, 10)


def test_bf16_and_channels_last_are_optional_and_change_results(recipe):
    g = torch.Generator().manual_seed(0)
    from nondet.training.data import Dataset

    imgs = Dataset(
        "img",
        torch.randn(64, 3, 8, 8, generator=g),
        torch.randint(0, 10, (64,), generator=g),
        torch.randn(16, 3, 8, 8, generator=g),
        torch.randint(0, 10, (16,), generator=g),
    )
    spec = {"arch": "resnet", "blocks": 1, "width": 4}
    base = {**recipe, "augment": "crop_flip", "batch_size": 16, "epochs": 1}
    run = lambda **kw: train_replica(TrainRun(spec, {**base, **kw}, CPU), replica_seeds("control", 0, 0), imgs)  # noqa: E731
    fp32, again = run(), run()
    assert weights_equal(fp32["state"], again["state"])
    bf16 = run(bf16=True)
    assert not weights_equal(fp32["state"], bf16["state"])
    assert all(np.isfinite(v).all() for v in bf16["state"].values())
    cl = run(channels_last=True)
    diff = max(np.abs(cl["state"][k] - fp32["state"][k]).max() for k in fp32["state"])
    assert diff < 1e-3


def _per_example_draws(monkeypatch, spec, recipe, seeds, data):
    """Train one replica, recording for every (epoch, example index) the augmented input and the
    dropout keep-mask it saw (known where the dropout input is non-zero)."""
    import nondet.training.replica as training
    from nondet.training.models import SeededDropout

    steps, outputs = [], []

    class Recording(training.ReplicaDraws):
        def batch(self, order, epoch, b, data):
            index, x, y = super().batch(order, epoch, b, data)
            steps.append((epoch, index.clone(), x.clone()))
            return index, x, y

    def build(*args, **kwargs):
        model = build_model(*args, **kwargs)
        for m in model.modules():
            if isinstance(m, SeededDropout):
                m.register_forward_hook(
                    lambda mod, inp, out: (
                        outputs.append((inp[0].detach().clone(), out.detach().clone())) if mod.training else None
                    )
                )
        return model

    monkeypatch.setattr(training, "ReplicaDraws", Recording)
    monkeypatch.setattr(training, "build_model", build)
    train_replica(TrainRun(spec, recipe, CPU), seeds, data)
    assert len(steps) == len(outputs) > 0
    augmented, masks = {}, {}
    for (epoch, index, x_aug), (x, y) in zip(steps, outputs):
        for row, i in enumerate(index.tolist()):
            augmented[epoch, i] = x_aug[row]
            known = x[row] != 0
            masks[epoch, i] = (known, (y[row] != 0) & known)
    return augmented, masks


@pytest.mark.parametrize("whole_epoch", [True, False], ids=["epoch-augmented", "batch-augmented"])
@pytest.mark.parametrize("condition", ["shuffle", "kernels", "dropout"])
def test_each_example_keeps_its_dropout_mask_and_augmentation_across_data_orders(
    small_data, recipe, cnn_spec, monkeypatch, condition, whole_epoch
):
    """One source per condition, per example: a new data order (shuffle) or within-batch order
    (the CPU kernels stand-in) must not hand any example another dropout mask or augmentation;
    the dropout condition must (the check can fail)."""
    import nondet.training.replica as training

    if not whole_epoch:  # the per-batch augmentation of large training sets
        monkeypatch.setattr(training.ReplicaDraws, "WHOLE_EPOCH_BYTES", 0)
    spec = {**cnn_spec, "dropout": 0.5}
    base_aug, base_masks = _per_example_draws(monkeypatch, spec, recipe, replica_seeds("control", 0, 0), small_data)
    aug, masks = _per_example_draws(monkeypatch, spec, recipe, replica_seeds(condition, 0, 0), small_data)
    assert base_masks.keys() == masks.keys()  # every example, every epoch
    compared = differing = 0
    for key, (known, keep) in masks.items():
        both = known & base_masks[key][0]
        compared += int(both.sum())
        differing += int((keep[both] != base_masks[key][1][both]).sum())
        assert torch.equal(aug[key], base_aug[key])  # augmentation never depends on the order
    assert compared > 0.5 * len(masks) * spec["channels"]  # most activations are non-zero
    if condition == "dropout":
        assert differing > 0.2 * compared  # independent masks at p=0.5 differ in about half
    else:
        assert differing == 0


@pytest.mark.slow
@pytest.mark.parametrize("deterministic", [True, False])
def test_kernel_mode_turns_tf32_off_readably(deterministic):
    """No TF32 in any kernel mode, readable through the new and the legacy torch APIs: code that
    asks torch.backends.cudnn.allow_tf32 or enters cudnn.flags() (torch's own RNN and CTC paths,
    a user's model) must not raise. Global flags, so this holds without a GPU."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import torch\n"
        "from nondet.training.replica import set_kernel_mode\n"
        f"set_kernel_mode({deterministic}, torch.device('cpu'))\n"
        "b = torch.backends\n"
        "assert b.cudnn.allow_tf32 is False and b.cuda.matmul.allow_tf32 is False\n"
        "assert b.cuda.matmul.fp32_precision == 'ieee', b.cuda.matmul.fp32_precision\n"
        "assert b.cudnn.conv.fp32_precision != 'tf32' and b.cudnn.rnn.fp32_precision != 'tf32'\n"
        "with b.cudnn.flags(enabled=True):\n"
        "    pass\n"
        "assert b.cudnn.allow_tf32 is False\n"
    )
    # a fresh process: the flags are global, and other tests must not have set them first
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize(
    "nesterov,decay_on,scale,foreach",
    [(True, "weights", 1.0, False), (False, "all", 0.1, False), (True, "all", 0.1, True)],
)  # foreach: the multi-tensor path CUDA takes, run here on CPU against torch's own
def test_own_sgd_is_bitwise_torch_sgd_and_shares_its_checkpoint_layout(cnn_spec, nesterov, decay_on, scale, foreach):
    """nondet.training.optim.SGD replaces torch.optim.SGD (whose first use imports TorchDynamo, ~1.2 s per
    job): the same operations in the same order, so the same bits on the same machine."""
    import copy

    from nondet.training.loop import set_lr
    from nondet.training.optim import SGD
    from nondet.training.replica import param_groups

    recipe = {"weight_decay": 1e-2, "weight_decay_on": decay_on, "lr_scale_bias_bn": scale}
    x = torch.randn(64, 1, 40, generator=torch_generator(1))
    y = torch.randint(0, 10, (64,), generator=torch_generator(2))

    def optimiser(make, model):
        return make(param_groups(model, recipe), lr=0.2, momentum=0.9, nesterov=nesterov, foreach=foreach)

    def train(model, opt, steps):
        for s in range(steps):
            set_lr(opt, 0.2 / (s + 1))
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def same(a, b):
        return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))

    start = build_model({**cnn_spec, "dropout": 0.0}, (1, 40), 10, torch_generator(0))  # BatchNorm, no masks
    ours, ref = copy.deepcopy(start), copy.deepcopy(start)
    ours_opt, ref_opt = optimiser(SGD, ours), optimiser(torch.optim.SGD, ref)
    train(ours, ours_opt, 4)
    train(ref, ref_opt, 4)
    assert same(ours, ref) and not same(ours, start)
    ours_state, ref_state = ours_opt.state_dict(), ref_opt.state_dict()
    assert ours_state["state"].keys() == ref_state["state"].keys()
    for i, s in ref_state["state"].items():
        assert torch.equal(s["momentum_buffer"], ours_state["state"][i]["momentum_buffer"])
    # a checkpoint of either resumes the other, bitwise
    swapped_ours, swapped_ref = optimiser(SGD, ref), optimiser(torch.optim.SGD, ours)
    swapped_ours.load_state_dict(copy.deepcopy(ref_state))
    swapped_ref.load_state_dict(copy.deepcopy(ours_state))
    train(ref, swapped_ours, 3)
    train(ours, swapped_ref, 3)
    assert same(ours, ref)


@pytest.mark.slow
def test_training_imports_neither_torchdynamo_nor_sympy(tmp_path):
    """Neither is needed, and each costs every training job its import: sympy 0.3-0.5 s of CPU,
    which building the model on the meta device (to_empty) used to pull in."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from nondet.training.data import Dataset\n"
        "from nondet.seeds import replica_seeds\n"
        "from nondet.training.recipe import Bookkeeping, TrainRun\n"
        "from nondet.training.replica import train_replica\n"
        "g = torch.Generator().manual_seed(0)\n"
        "x, y = torch.randn(96, 1, 40, generator=g), torch.randint(0, 10, (96,), generator=g)\n"
        "data = Dataset('t', x, y, x[:32], y[:32])\n"
        "recipe = dict(epochs=1, batch_size=32, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2,\n"
        "              warmup_epochs=0, cycles=1, augment='shift', augment_size=1, kernels_cpu_standin=True,\n"
        "              eval_every=1)\n"
        "spec = {'arch': 'cnn1d', 'channels': 8, 'kernels': [5, 3, 3], 'dropout': 0.1}\n"
        "run = TrainRun(spec, recipe, torch.device('cpu'))\n"
        "train_replica(run, replica_seeds('all', 1, 0), data, Bookkeeping(log=lambda m: None))\n"
        "print('torch._dynamo' in sys.modules, 'sympy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().split("\n")[-1] == "False False"


@pytest.mark.parametrize("kind", ["shift", "crop_flip"])
def test_whole_epoch_augmentation_gives_the_per_batch_rows_bitwise(small_data, recipe, kind):
    """Small training sets are augmented whole once per epoch and batches copy their rows: every
    batch is bitwise what augmenting it alone gives (signals shifted, images cropped and flipped
    with a non-zero padding value)."""
    from nondet.training.data import Dataset
    from nondet.training.replica import ReplicaDraws

    data = small_data
    if kind == "crop_flip":
        x = torch.randn(len(data.y_train), 3, 8, 8, generator=torch_generator(5))
        data = Dataset("img", x, data.y_train, x[:10], data.y_test[:10], torch.tensor([-1.0, 0.5, 2.0]))
    seeds = replica_seeds("all", 1, 0)
    rec = {**recipe, "augment": kind, "augment_size": 2}
    whole, alone = (ReplicaDraws(seeds, rec, len(data.y_train), CPU) for _ in range(2))
    alone.WHOLE_EPOCH_BYTES = 0
    for epoch in range(2):
        order = whole.order(epoch)
        for b in range(3):
            (i1, x1, y1), (i2, x2, y2) = whole.batch(order, epoch, b, data), alone.batch(order, epoch, b, data)
            assert torch.equal(i1, i2) and torch.equal(y1, y2)
            assert torch.equal(x1, x2) and not torch.equal(x1, data.x_train[i1])  # augmented
