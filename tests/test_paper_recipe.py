"""The authors' recipe options: option-A shortcut, kaiming_normal(fan_out) init,
parameter groups (decay on all, 0.1 x lr for biases and BN scales), their schedule, fixed
normalisation constants and black crop padding. Today's choices stay the defaults."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from nondet.seeds import torch_generator
from nondet.training.augment import crop_flip
from nondet.training.data import CIFAR_CONSTANTS, from_arrays
from nondet.training.loop import set_lr
from nondet.training.models import ShortcutA, build_model, weight_decay_groups
from nondet.training.replica import Schedule, lr_at, lr_authors
from nondet.training.tta import make_views

RESNET14 = {"arch": "resnet", "blocks": 2, "width": 16, "dropout": 0.0}


def test_option_a_resnet14_has_the_authors_parameter_count():
    a = build_model({**RESNET14, "shortcut": "option_a"}, (3, 32, 32), 10, torch_generator(0))
    conv = build_model({**RESNET14, "shortcut": "conv"}, (3, 32, 32), 10, torch_generator(0))
    assert sum(p.numel() for p in a.parameters()) == 172_602  # the authors' ResNet-14
    assert sum(p.numel() for p in conv.parameters()) > 172_602  # the 1x1 convs add parameters


def test_option_a_shortcut_has_only_batchnorm_parameters_and_pads_zeros():
    net = build_model({**RESNET14, "shortcut": "option_a"}, (3, 32, 32), 10, torch_generator(0))
    shortcuts = [m for m in net.modules() if isinstance(m, ShortcutA)]
    assert len(shortcuts) == 2  # the two stage transitions 16->32, 32->64
    for sc in shortcuts:
        owners = {type(m) for m in sc.modules() if list(m.parameters(recurse=False))}
        assert owners == {nn.BatchNorm2d}
        x = torch.randn(2, sc.bn.num_features, 8, 8)
        out = sc.eval()(x)
        c = sc.bn.num_features
        assert out.shape == (2, 2 * c, 4, 4)
        assert torch.equal(out[:, c:], torch.zeros_like(out[:, c:]))  # zero-padded channels
        assert torch.equal(out[:, :c], sc.bn(x[:, :, ::2, ::2]))  # stride-2 subsampling + BN


def test_kaiming_normal_fan_out_init_matches_its_statistics():
    # 64-channel 3x3 convs: fan_out = 64 * 9, std = sqrt(2 / fan_out). The three 64x64x3x3 convs
    # and the 32->64 one hold 129,024 normal draws: the sample SD's relative standard error is
    # 1/sqrt(2n) ~ 0.002, so a 1 % tolerance is 5 standard errors (fails by chance ~1e-6).
    net = build_model(
        {**RESNET14, "shortcut": "option_a"}, (3, 32, 32), 10, torch_generator(3), init="kaiming_normal_fan_out"
    )
    w = torch.cat(
        [m.weight.detach().flatten() for m in net.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 64]
    ).double()
    assert w.numel() == 3 * 64 * 64 * 9 + 64 * 32 * 9
    expected = math.sqrt(2.0 / (64 * 9))
    assert abs(float(w.std()) / expected - 1) < 0.01
    assert abs(float(w.mean())) < 5 * expected / math.sqrt(w.numel())
    # normal, not uniform (PyTorch's default is kaiming_uniform): the KS test tells them apart
    assert stats.kstest(w.numpy() / expected, "norm").pvalue > 1e-4
    default = build_model(RESNET14, (3, 32, 32), 10, torch_generator(3))
    wd = torch.cat(
        [m.weight.detach().flatten() for m in default.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 64]
    ).double()
    assert stats.kstest(wd.numpy() / float(wd.std()), "norm").pvalue < 1e-6
    # drawn from the init generator: same seed same weights, other seed other weights
    again = build_model(RESNET14, (3, 32, 32), 10, torch_generator(3), init="kaiming_normal_fan_out")
    other = build_model(RESNET14, (3, 32, 32), 10, torch_generator(4), init="kaiming_normal_fan_out")
    assert torch.equal(again.stem[0].weight, net.stem[0].weight)
    assert not torch.equal(other.stem[0].weight, net.stem[0].weight)


def _group_of(groups):
    return {id(p): g for g in groups for p in g["params"]}


def test_parameter_groups_default_and_authors():
    net = build_model({**RESNET14, "shortcut": "option_a"}, (3, 32, 32), 10, torch_generator(0))
    bias_or_bn = {
        id(p)
        for m in net.modules()
        for n, p in m.named_parameters(recurse=False)
        if n == "bias" or isinstance(m, nn.BatchNorm2d)
    }
    conv_lin_weights = {id(m.weight) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert bias_or_bn and conv_lin_weights and not bias_or_bn & conv_lin_weights

    ours = _group_of(weight_decay_groups(net, 5e-4))
    for p in net.parameters():
        assert ours[id(p)]["lr_scale"] == 1.0
        assert ours[id(p)]["weight_decay"] == (5e-4 if id(p) in conv_lin_weights else 0.0)

    groups = weight_decay_groups(net, 5e-4, decay_on="all", lr_scale_bias_bn=0.1)
    theirs = _group_of(groups)
    assert len(theirs) == len(list(net.parameters()))  # every parameter in exactly one group
    for p in net.parameters():
        assert theirs[id(p)]["weight_decay"] == 5e-4
        assert theirs[id(p)]["lr_scale"] == (0.1 if id(p) in bias_or_bn else 1.0)
    opt = torch.optim.SGD(groups, lr=1.0, momentum=0.9)
    set_lr(opt, 0.4)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(0.4 * g["lr_scale"])
    assert sorted({round(g["lr"], 12) for g in opt.param_groups if g["params"]}) == [0.04, 0.4]


def test_authors_schedule_values():
    # 10 steps per epoch, 500 epochs, 3 warm-up epochs (their train.py learning_rate_fn)
    peak, total, w = 0.4, 5000, 30
    lr = lambda s: lr_authors(s, total, peak, w)  # noqa: E731
    assert lr(0) == 0.0  # warm-up starts from 0
    assert lr(15) == pytest.approx(0.2) and lr(30) == pytest.approx(peak)
    # after warm-up: one cosine over all steps counted from step 0, not restarted
    for s in (31, 1000, 2500, 4999):
        assert lr(s) == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * s / total)))
    assert lr(31) < peak and lr(2500) == pytest.approx(peak / 2)
    assert lr(31) != pytest.approx(lr_at(31, total, peak, w))  # ours restarts the cosine
    # per cycle (their snapshot5): every cycle warms up from 0 again
    assert lr_authors(1000, total, peak, w, cycles=5) == 0.0
    assert lr_authors(1015, total, peak, w, cycles=5) == pytest.approx(0.2)
    recipe = {
        "batch_size": 100,
        "epochs": 500,
        "cycles": 1,
        "lr": peak,
        "eval_every": 0,
        "warmup_epochs": 3,
        "schedule": "authors",
    }
    sched = Schedule(recipe, 1000)
    assert [sched.lr(s) for s in (0, 15, 2500)] == [lr(0), lr(15), lr(2500)]
    assert Schedule({**recipe, "schedule": "cosine_restart"}, 1000).lr(0) == lr_at(0, total, peak, w)
    with pytest.raises(ValueError, match="training.schedule"):
        Schedule({**recipe, "schedule": "linear"}, 1000)


def _images(n=20, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int64)
    return {"x_train": x, "y_train": y, "x_test": x[:5], "y_test": y[:5]}


def test_cifar_constants_and_black_padding():
    arrays = _images()
    exact = from_arrays("img", arrays)
    const = from_arrays("img", arrays, normalize="cifar_constants", pad_value="black")
    mean, sd = (torch.tensor(c).view(1, 3, 1, 1) for c in CIFAR_CONSTANTS)
    x01 = torch.from_numpy(arrays["x_train"]).double() / 255
    assert torch.allclose(const.x_train.double(), (x01 - mean) / sd, atol=1e-5)
    assert not torch.allclose(exact.x_train, const.x_train, atol=1e-3)
    assert exact.pad_fill is None  # ours: zeros after normalising
    # black = a pixel of 0 normalised like every other pixel
    black = from_arrays("img", {**arrays, "x_train": np.zeros_like(arrays["x_train"])}, normalize="cifar_constants")
    assert torch.equal(const.pad_fill, black.x_train[0, :, 0, 0])
    # a crop shifted by the full padding: the uncovered border is black, the rest the image
    params = torch.tensor([[0, 0, 0]]).expand(len(const.x_train), 3)
    out = crop_flip(const.x_train, params, 4, const.pad_fill)
    assert torch.equal(out[:, :, :4, :], const.pad_fill.view(1, 3, 1, 1).expand(20, 3, 4, 8))
    assert torch.equal(out[:, :, 4:, 4:], const.x_train[:, :, :4, :4])
    assert torch.equal(crop_flip(const.x_train, params, 4)[:, :, :4], torch.zeros(20, 3, 4, 8))
    # the TTA crop views pad the same way
    views = dict(make_views({"kind": "crops", "size": 4, "stride": 4}, const.pad_fill))
    assert torch.equal(views["crop-4-4"](const.x_train), out)
    with pytest.raises(ValueError, match="dataset.normalize"):
        from_arrays("img", arrays, normalize="imagenet")


def test_training_augmentation_pads_with_the_data_sets_fill():
    from nondet.training.augment import Augmenter, crop_flip_params

    data = from_arrays("img", _images(), normalize="cifar_constants", pad_value="black")
    index = torch.arange(20).flip(0)
    aug = Augmenter("crop_flip", 7, 20, 4)
    aug.fill = data.pad_fill
    expected = crop_flip(data.x_train[index], crop_flip_params(7, 0, 20, 4)[index], 4, data.pad_fill)
    assert torch.equal(aug(data.x_train[index], index, 0), expected)
    aug.fill = None
    assert not torch.equal(aug(data.x_train[index], index, 0), expected)


def test_dataset_subset_keeps_the_first_examples(monkeypatch):
    from nondet.io import checksums
    from nondet.io import datasets as D

    full = _images(20)
    monkeypatch.setattr(D, "_dataset_arrays", lambda spec, log: dict(full))
    sub = D.make_dataset_arrays({"name": "x", "n_train": 7, "n_test": 3})
    assert np.array_equal(sub["x_train"], full["x_train"][:7]) and len(sub["y_test"]) == 3
    assert len(D.make_dataset_arrays({"name": "x"})["y_train"]) == 20
    with pytest.raises(checksums.DataError, match="dataset.n_train: 21"):
        D.make_dataset_arrays({"name": "x", "n_train": 21})
