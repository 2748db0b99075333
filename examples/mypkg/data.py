"""A loader for a Fashion-MNIST subset, read from the idx files of Debian's dataset-fashion-mnist
package (apt-get install dataset-fashion-mnist)."""

import gzip
from pathlib import Path

import numpy as np


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", ndim, 4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(folder="/usr/share/datasets/fashion-mnist", n_train=10000, n_test=2000):
    """x_train, y_train, x_test, y_test: the first n_train / n_test examples, images as uint8
    (N, 1, 28, 28) (the pipeline normalises them per channel), labels 0..9."""
    folder = Path(folder)
    x_train = read_idx(folder / "train-images-idx3-ubyte.gz")[:n_train, None]
    y_train = read_idx(folder / "train-labels-idx1-ubyte.gz")[:n_train].astype(np.int64)
    x_test = read_idx(folder / "t10k-images-idx3-ubyte.gz")[:n_test, None]
    y_test = read_idx(folder / "t10k-labels-idx1-ubyte.gz")[:n_test].astype(np.int64)
    return x_train, y_train, x_test, y_test
