"""Data sets, held as tensors on the training device.

The readers of every data set (mnist1d, CIFAR, idx sets, SVHN, arrays files, loaders) are
torch-free and live in nondet.io (datasets: the registry; cifar, formats: the readers); this
module is the tensor side.
uint8 images are stored as such and normalised per channel on the device when loaded
(:func:`from_arrays`).

torch is imported by :func:`from_arrays` only: the dataset stage
(nondet.workflow.analysis_stages.dataset, one job that every other job waits for) makes and writes the arrays without
it, which saves the 1.6-1.8 s torch import at the head of every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from nondet.io.files import read_dataset

if TYPE_CHECKING:
    import torch


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # (N, D), (N, C, L) or (N, C, H, W), float32
    y_train: torch.Tensor  # (N,), int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    pad_fill: torch.Tensor | None = None  # per-channel crop padding (None = 0, the mean colour)
    content_sha256: str | None = None  # SHA-256 of the arrays (arrays_sha256), when known

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device) -> "Dataset":
        return Dataset(
            self.name,
            self.x_train.to(device),
            self.y_train.to(device),
            self.x_test.to(device),
            self.y_test.to(device),
            None if self.pad_fill is None else self.pad_fill.to(device),
            self.content_sha256,
        )


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and SD of uint8 images (N, C, H, W), from integer sums."""
    axes = (0,) + tuple(range(2, x.ndim))  # images (N, C, H, W) or signals (N, C, L)
    n = x.size // x.shape[1]
    s = x.sum(axis=axes, dtype=np.int64)
    dims = "nc" + "hw"[: x.ndim - 2]
    ss = np.einsum(f"{dims},{dims}->c", x, x, dtype=np.int64)
    mean = s / n
    return mean, np.sqrt(ss / n - mean**2)


#: dataset.normalize: cifar_constants = the authors' fixed CIFAR-10 constants (mean, SD) of 0..1 pixels.
CIFAR_CONSTANTS = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))


def from_arrays(name: str, arrays: dict, device="cpu", normalize: str = "exact", pad_value: str = "mean") -> Dataset:
    """Tensors on ``device``. uint8 images are moved as bytes, then normalised per channel there:
    ``normalize`` exact = statistics of the training set, in float64 on the host, so identical on
    every device; cifar_constants = the authors' fixed constants (3-channel images only).
    ``pad_value`` of crops: mean = 0 after normalising (the mean colour); black = pixels 0 before
    normalising, i.e. -mean/SD per channel (the authors' padding)."""
    import torch

    arrays = dict(arrays)
    stats = None
    if arrays["x_train"].dtype == np.uint8:
        stats = channel_stats(arrays["x_train"])
        if normalize == "cifar_constants":
            if arrays["x_train"].shape[1] != 3:
                raise ValueError("dataset.normalize: cifar_constants needs 3-channel images")
            stats = tuple(255.0 * np.asarray(c, dtype=np.float64) for c in CIFAR_CONSTANTS)
        elif normalize != "exact":
            raise ValueError(f"unknown dataset.normalize {normalize!r}; known: exact, cifar_constants")
    if pad_value not in ("mean", "black"):
        raise ValueError(f"unknown dataset.pad_value {pad_value!r}; known: mean, black")
    t = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in arrays.items()}
    if stats is not None:
        shape = (1, -1) + (1,) * (t["x_train"].dim() - 2)
        mean = torch.tensor(stats[0], dtype=torch.float32, device=device).view(shape)
        std = torch.tensor(stats[1], dtype=torch.float32, device=device).view(shape)
        for k in ("x_train", "x_test"):
            t[k] = (t[k].float() - mean) / std
    fill = None
    if pad_value == "black" and stats is not None:
        fill = ((torch.zeros_like(mean) - mean) / std).flatten()  # as a normalised 0 pixel
    return Dataset(name, t["x_train"], t["y_train"], t["x_test"], t["y_test"], fill)


def load_dataset(path, expected_hash: str, device="cpu") -> Dataset:
    """The data set file written by the dataset stage, checked (nondet.io.files.read_dataset),
    as tensors on ``device``."""
    spec, arrays, content = read_dataset(path, expected_hash)
    data = from_arrays(spec["name"], arrays, device, spec.get("normalize", "exact"), spec.get("pad_value", "mean"))
    data.content_sha256 = content
    return data
