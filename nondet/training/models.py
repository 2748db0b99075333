"""Model families for the stability contrast: linear, MLP, 1-D CNN, ResNet (CIFAR style).

Every model returns ``(features, logits)`` from :meth:`forward_with_features`; ``features`` is the
penultimate-layer representation used for CKA. A linear model has no hidden representation, so its
features are its logits (documented in the README).

Parameters are initialised by :func:`init_parameters` from a dedicated generator (PyTorch's default
schemes, but never the global RNG); dropout takes its masks from :mod:`nondet.training.dropout`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nondet.training.dropout import SeededDropout


class Linear(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(int(np.prod(in_shape)), num_classes)

    def forward_with_features(self, x):
        logits = self.fc(x.flatten(1))
        return logits, logits

    def forward(self, x):
        return self.forward_with_features(x)[1]


class MLP(nn.Module):
    """One hidden layer with ReLU (optionally BatchNorm), dropout before the output layer."""

    def __init__(self, in_shape, num_classes, hidden=128, dropout=0.0, batchnorm=True):
        super().__init__()
        self.hidden = nn.Linear(int(np.prod(in_shape)), hidden, bias=not batchnorm)
        self.bn = nn.BatchNorm1d(hidden) if batchnorm else nn.Identity()
        self.dropout = SeededDropout(dropout)
        self.fc = nn.Linear(hidden, num_classes)

    def forward_with_features(self, x):
        h = F.relu(self.bn(self.hidden(x.flatten(1))))
        return h, self.fc(self.dropout(h))

    def forward(self, x):
        return self.forward_with_features(x)[1]


class CNN1d(nn.Module):
    """Conv-BN-ReLU layers (stride 2), global mean pool, dropout, linear."""

    def __init__(self, in_shape, num_classes, channels=32, kernels=(5, 3, 3), dropout=0.1):
        super().__init__()
        layers, c_in = [], in_shape[0]
        for k in kernels:
            layers += [
                nn.Conv1d(c_in, channels, k, stride=2, padding=k // 2, bias=False),
                nn.BatchNorm1d(channels),
                nn.ReLU(),
            ]
            c_in = channels
        self.body = nn.Sequential(*layers)
        self.dropout = SeededDropout(dropout)
        self.fc = nn.Linear(channels, num_classes)

    def forward_with_features(self, x):
        h = self.body(x).mean(-1)
        return h, self.fc(self.dropout(h))

    def forward(self, x):
        return self.forward_with_features(x)[1]


class ShortcutA(nn.Module):
    """The authors' parameter-free shortcut ("option A"): keep every ``stride``-th pixel, batch-
    normalise the ``c_in`` channels, and append ``c_out - c_in`` channels of zeros. BatchNorm's
    scale and shift are its only parameters."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        if c_out < c_in:
            raise ValueError(f"option_a shortcut cannot reduce channels ({c_in} -> {c_out})")
        self.stride, self.extra = stride, c_out - c_in
        self.bn = nn.BatchNorm2d(c_in)

    def forward(self, x):
        h = self.bn(x[:, :, :: self.stride, :: self.stride])
        return F.pad(h, (0, 0, 0, 0, 0, self.extra)) if self.extra else h


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride, shortcut="conv"):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.bn2.zero_init = True  # zero-init of the block's last BN scale
        self.shortcut = nn.Identity()
        if (stride != 1 or c_in != c_out) and shortcut == "option_a":
            self.shortcut = ShortcutA(c_in, c_out, stride)
        elif stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet: 3x3 stem, three stages of ``blocks`` basic blocks, mean pool, linear.

    ResNet-14 is blocks=2, width=16 (stages of 16/32/64 channels). ``shortcut`` where the shape
    changes: ``conv`` (1x1 conv + BN) or ``option_a`` (the authors' parameter-free
    :class:`ShortcutA`; 172,602 parameters for ResNet-14 on CIFAR-10). Pooling is ``x.mean((2, 3))``
    because AdaptiveAvgPool2d has no deterministic CUDA backward.
    """

    def __init__(self, in_shape, num_classes, blocks=2, width=16, dropout=0.0, shortcut="conv"):
        super().__init__()
        if shortcut not in ("conv", "option_a"):
            raise ValueError(f"unknown resnet shortcut {shortcut!r}; known: conv, option_a")
        self.stem = nn.Sequential(nn.Conv2d(in_shape[0], width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        stages, c_in = [], width
        for i, c in enumerate((width, 2 * width, 4 * width)):
            for b in range(blocks):
                stages.append(BasicBlock(c_in, c, 2 if (b == 0 and i > 0) else 1, shortcut))
                c_in = c
        self.stages = nn.Sequential(*stages)
        self.dropout = SeededDropout(dropout)
        self.fc = nn.Linear(c_in, num_classes)

    def forward_with_features(self, x):
        h = self.stages(self.stem(x)).mean((2, 3))
        return h, self.fc(self.dropout(h))

    def forward(self, x):
        return self.forward_with_features(x)[1]


ARCHITECTURES = {"linear": Linear, "mlp": MLP, "cnn1d": CNN1d, "resnet": ResNet}


#: Initialisation schemes (recipe key ``init``).
INITS = ("pytorch", "kaiming_normal_fan_out")


@torch.no_grad()
def init_parameters(model: nn.Module, generator: torch.Generator, scheme: str = "pytorch") -> None:
    """Initialisation drawn from ``generator`` in module order: PyTorch's defaults (``pytorch``),
    or as the authors' code (``kaiming_normal_fan_out``): conv weights from
    kaiming_normal(mode fan_out, relu gain), everything else as PyTorch's defaults."""
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}; known: {', '.join(INITS)}")
    for m in model.modules():
        if scheme == "kaiming_normal_fan_out" and isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                fan_in = m.weight[0].numel()
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.reset_running_stats()
            nn.init.zeros_(m.weight) if getattr(m, "zero_init", False) else nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


#: Built-in architectures that take tabular features (N, D): they flatten their input.
TABULAR_ARCHS = ("linear", "mlp")


def build_model(
    spec: dict, in_shape, num_classes: int, generator: torch.Generator, device="cpu", init: str = "pytorch"
):
    """Construct ``spec["arch"]`` without touching the global RNG, initialised from ``generator``
    by the scheme ``init`` (:func:`init_parameters`; a user's model initialises itself)."""
    spec = dict(spec)
    if ":" in spec["arch"]:  # a user's callable "pkg.module:build" (nondet.training.usermodel)
        from nondet.training.usermodel import build_user_model

        return build_user_model(spec, in_shape, num_classes, generator.initial_seed()).to(device)
    arch = spec.pop("arch")
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    if len(in_shape) == 1 and arch not in TABULAR_ARCHS:  # a conv net would misread (N, D)
        raise ValueError(
            f"architecture {arch!r} needs signals (N, C, L) or images (N, C, H, W); this data set is "
            f"tabular (N, D) = (N, {in_shape[0]}): use {' or '.join(TABULAR_ARCHS)}, or a model of your own"
        )
    # built on the CPU, its default init drawn inside fork_rng so the global RNG is left as it
    # was, then every parameter and buffer set from ``generator``. (Not on the meta device: its
    # to_empty goes through torch's Python reference ops, which import sympy, 0.3-0.5 s of CPU in
    # every job that builds a model, against about 2 ms for this construction.)
    with torch.random.fork_rng(devices=[]):
        model = ARCHITECTURES[arch](tuple(in_shape), num_classes, **spec)
    init_parameters(model, generator, init)
    return model.to(device)


def weight_decay_groups(
    model: nn.Module, weight_decay: float, decay_on: str = "weights", lr_scale_bias_bn: float = 1.0
):
    """Parameter groups of the optimiser.

    ``decay_on``: ``weights`` = weight decay on conv/linear weights only (none on biases and
    BatchNorm parameters); ``all`` = on every parameter (the authors' code). Every group has an
    ``lr_scale``: the step's learning rate is multiplied by it (nondet.training.loop.set_lr); biases
    and BatchNorm scales get ``lr_scale_bias_bn`` (the authors: 0.1), everything else 1.
    The first two groups are always the decayed and the undecayed parameters at scale 1.
    """
    if decay_on not in ("weights", "all"):
        raise ValueError(f"unknown weight_decay_on {decay_on!r}; known: weights, all")
    keys = [(True, 1.0), (False, 1.0), (True, lr_scale_bias_bn), (False, lr_scale_bias_bn)]
    groups = {key: [] for key in keys}
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            is_weight = name == "weight" and isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))
            bias_or_bn = name == "bias" or isinstance(m, nn.modules.batchnorm._BatchNorm)
            decayed = decay_on == "all" or is_weight
            groups[(decayed, lr_scale_bias_bn if bias_or_bn else 1.0)].append(p)
    out = []
    for i, (decayed, scale) in enumerate(keys):
        if i < 2 or (groups[keys[i]] and scale != 1.0):
            out.append({"params": groups[keys[i]], "weight_decay": weight_decay if decayed else 0.0, "lr_scale": scale})
    return out
