import torch

from nondet.training.augment import Augmenter, crop_flip, shift


def test_shift_identity_and_direction():
    x = torch.arange(10.0).reshape(1, 1, 10)
    assert torch.equal(shift(x, torch.tensor([2]), 2), x)
    right = shift(x, torch.tensor([0]), 2)  # offset 0 = shifted right by 2, zero padded
    assert right[0, 0].tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7]


def test_crop_flip_identity_and_flip():
    x = torch.arange(2 * 3 * 4 * 4.0).reshape(2, 3, 4, 4)
    centre = torch.tensor([[2, 2, 0], [2, 2, 1]])
    out = crop_flip(x, centre, 2)
    assert torch.equal(out[0], x[0])
    assert torch.equal(out[1], x[1].flip(-1))
    assert out.shape == x.shape


def test_augmentation_of_an_example_does_not_depend_on_shuffle_order():
    n = 50
    x = torch.randn(n, 1, 40)
    aug = Augmenter("shift", seed=123, n=n, size=2)
    order_a = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    order_b = torch.randperm(n, generator=torch.Generator().manual_seed(2))
    out_a = torch.cat([aug(x[idx], idx, 3) for idx in order_a.split(16)])
    out_b = torch.cat([aug(x[idx], idx, 3) for idx in order_b.split(7)])
    by_example_a = out_a[torch.argsort(order_a)]
    by_example_b = out_b[torch.argsort(order_b)]
    assert torch.equal(by_example_a, by_example_b)
    # ... but it does change with the epoch and the seed
    idx = torch.arange(n)
    assert not torch.equal(aug(x, idx, 3), aug(x, idx, 4))
    assert not torch.equal(aug(x, idx, 3), Augmenter("shift", 124, n, 2)(x, idx, 3))


def _augmented_by_example(keyed_by, shuffle_replica):
    """Each training example's augmented signal in epoch 0, from ReplicaDraws (batches of 16)."""
    from nondet.seeds import replica_seeds
    from nondet.training.data import Dataset
    from nondet.training.replica import ReplicaDraws

    n = 64
    g = torch.Generator().manual_seed(0)
    data = Dataset(
        "d",
        torch.randn(n, 1, 40, generator=g),
        torch.zeros(n, dtype=torch.long),
        torch.randn(8, 1, 40, generator=g),
        torch.zeros(8, dtype=torch.long),
    )
    recipe = {"batch_size": 16, "augment": "shift", "augment_size": 2, "kernels_cpu_standin": True}
    if keyed_by:
        recipe["augment_keyed_by"] = keyed_by
    draws = ReplicaDraws(replica_seeds("shuffle", shuffle_replica, 0), recipe, n, torch.device("cpu"))
    order, out = draws.order(0), torch.empty_like(data.x_train)
    for b in range(n // 16):
        index, x, _ = draws.batch(order, 0, b, data)
        out[index] = x
    return out


def test_the_authors_coupling_of_augmentation_to_the_data_order_is_an_option():
    """By default (and with augment_keyed_by: example) a new shuffle seed leaves every example's
    augmentation as it was; keyed by position, as in the authors' DataLoader, it re-augments."""
    base = _augmented_by_example(None, 0)
    assert torch.equal(base, _augmented_by_example("example", 0))
    assert torch.equal(base, _augmented_by_example(None, 1))  # shuffle varies the order only
    coupled, reshuffled = _augmented_by_example("position", 0), _augmented_by_example("position", 1)
    changed = (coupled != reshuffled).flatten(1).any(1)
    assert changed.sum() > 64 // 2  # most examples get another shift (1 in 5 keeps its own)
