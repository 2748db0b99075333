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


def flip_candidates(model: nn.Module, tensor: str | None = None) -> list[tuple[str, torch.Tensor]]:
    """Tensors the flip may land in: every conv/linear weight, or only the parameter ``tensor``."""
    if tensor is None:
        return weight_tensors(model)
    params = dict(model.named_parameters())
    if tensor not in params:
        names = ", ".join(name for name, _ in weight_tensors(model))
        raise ValueError(
            f"bitflip_tensor {tensor!r} is not a parameter of the model (its conv/linear weights: {names})"
        )
    if params[tensor].dtype != torch.float32:
        raise ValueError(f"bitflip_tensor {tensor!r} is {params[tensor].dtype}, not float32")
    return [(tensor, params[tensor])]


@torch.no_grad()
def apply_bitflip(model: nn.Module, seed: int, tensor: str | None = None) -> dict:
    """Move one weight scalar by one ulp: drawn uniformly over all conv/linear weights, or over
    the scalars of the parameter named ``tensor`` (the authors flipped their ResNets' stem conv).

    The scalar and the direction (towards +inf or -inf, ``numpy.nextafter``) are drawn from
    ``numpy.random.default_rng(seed)``. Returns what was changed, for provenance.
    """
    rng = np.random.default_rng(seed)
    tensors = flip_candidates(model, tensor)
    sizes = np.array([t.numel() for _, t in tensors])
    flat = int(rng.integers(sizes.sum()))
    which = int(np.searchsorted(np.cumsum(sizes), flat, side="right"))
    offset = flat - int(sizes[:which].sum())
    direction = 1 if rng.integers(2) else -1
    name, target = tensors[which]
    view = target.view(-1)
    old = np.float32(view[offset].item())
    new = np.nextafter(old, np.float32(np.inf if direction > 0 else -np.inf), dtype=np.float32)
    view[offset] = torch.tensor(float(new), dtype=target.dtype)
    return {
        "target": tensor or "any conv/linear weight",
        "tensor": name,
        "index": offset,
        "direction": direction,
        "old": float(old),
        "new": float(new),
    }
