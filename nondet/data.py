"""Data sets, held as tensors on the training device.

The default data set, mnist1d, is generated locally (no download): 4000 train / 1000 test
one-dimensional signals of length 40, 10 classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # (N, C, L) or (N, C, H, W), float32
    y_train: torch.Tensor  # (N,), int64
    x_test: torch.Tensor
    y_test: torch.Tensor

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
        )


def make_mnist1d(seed: int = 42, num_samples: int = 5000, train_split: float = 0.8) -> dict:
    """Generate mnist1d locally with the package's own generator (never its downloader).

    ``mnist1d.data.make_dataset`` reseeds NumPy's global RNG; we restore the caller's state
    afterwards so that nothing else is affected.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = int(seed)
    args.num_samples = int(num_samples)
    args.train_split = float(train_split)
    saved = np.random.get_state()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(saved)
    return {
        "x_train": d["x"].astype(np.float32)[:, None, :],
        "y_train": d["y"].astype(np.int64),
        "x_test": d["x_test"].astype(np.float32)[:, None, :],
        "y_test": d["y_test"].astype(np.int64),
    }


def make_dataset_arrays(spec: dict) -> dict:
    """Arrays of the data set described by the config's ``dataset`` section."""
    name = spec["name"]
    if name == "mnist1d":
        return make_mnist1d(spec.get("seed", 42), spec.get("num_samples", 5000))
    raise ValueError(f"unknown dataset {name!r}; known: mnist1d")


def from_arrays(name: str, arrays: dict, device="cpu") -> Dataset:
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    return Dataset(name, t["x_train"], t["y_train"], t["x_test"], t["y_test"]).to(device)
