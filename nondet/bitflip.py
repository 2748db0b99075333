"""The one-ulp perturbation: nudge ONE scalar of ONE initial weight tensor to the next float."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def weight_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Conv and linear weight tensors, by name, in module order."""
    out = []
    for mod_name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            out.append((f"{mod_name}.weight" if mod_name else "weight", m.weight))
    return out


@torch.no_grad()
def apply_bitflip(model: nn.Module, seed: int) -> dict:
    """Move one weight scalar, chosen uniformly over all conv/linear weights, by one ulp.

    The scalar and the direction (towards +inf or -inf, ``numpy.nextafter``) are drawn from
    ``numpy.random.default_rng(seed)``. Returns what was changed, for provenance.
    """
    rng = np.random.default_rng(seed)
    tensors = weight_tensors(model)
    sizes = np.array([t.numel() for _, t in tensors])
    flat = int(rng.integers(sizes.sum()))
    which = int(np.searchsorted(np.cumsum(sizes), flat, side="right"))
    offset = flat - int(sizes[:which].sum())
    direction = 1 if rng.integers(2) else -1
    name, tensor = tensors[which]
    view = tensor.view(-1)
    old = np.float32(view[offset].item())
    new = np.nextafter(old, np.float32(np.inf if direction > 0 else -np.inf), dtype=np.float32)
    view[offset] = torch.tensor(float(new), dtype=tensor.dtype)
    return {
        "tensor": name,
        "index": offset,
        "direction": direction,
        "old": float(old),
        "new": float(new),
    }
