"""A training script run by a command template; it does not import nondet, so a user of any
framework can see what the pipeline asks: read the seeds from argv, train, write the test logits.

    command: "python examples/train_cmd.py --seeds {seeds_json} --data {data} --train-index {train_index} --out {out}"

``--seeds`` is a JSON object with one seed per source (0 ... 2**32 - 1, null when the source is
off): init, shuffle, augment, dropout, kernels, bitflip, data. ``--train-index`` is a .npy of the
training examples of this replica (its resample when the data source is on, else all of them).
This script is a softmax regression in NumPy (minibatch SGD on the flattened inputs); it uses
init, shuffle and data, and ignores the rest, which the pipeline's audit reports. It writes the
test labels beside the logits (checked: another split or row order is refused) and the training
examples it used (checked against the replica's resample).
"""

import argparse
import json

import h5py
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--train-index", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.5)
    args = ap.parse_args()
    seeds = json.loads(args.seeds)

    with h5py.File(args.data, "r") as f:
        x_train, y_train = f["x_train"][()], f["y_train"][()]
        x_test, y_test = f["x_test"][()], f["y_test"][()]
    scale = 255.0 if x_train.dtype == np.uint8 else 1.0
    x_train = x_train.reshape(len(x_train), -1) / scale
    x_test = x_test.reshape(len(x_test), -1) / scale
    n, d = x_train.shape
    k = int(y_train.max()) + 1

    index = np.load(args.train_index)  # data: the replica's resample (all n when the source is off)
    w = np.random.default_rng(seeds["init"]).normal(0, 0.01, (d, k))  # init
    b = np.zeros(k)
    order_rng = np.random.default_rng(seeds["shuffle"])  # shuffle
    for _ in range(args.epochs):
        for batch in np.array_split(order_rng.permutation(index), max(1, len(index) // 128)):
            z = x_train[batch] @ w + b
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(len(batch)), y_train[batch]] -= 1.0
            w -= args.lr * x_train[batch].T @ p / len(batch)
            b -= args.lr * p.mean(0)
    np.savez(args.out, logits=(x_test @ w + b).astype(np.float32), labels=y_test, train_index=index)


if __name__ == "__main__":
    main()
