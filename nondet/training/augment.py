"""Data augmentation, done in batches on the device.

The augmentation of example ``i`` in epoch ``e`` is a function of (augment seed, e, i) alone: per
epoch we draw one parameter per *example index* of the whole training set, and a batch looks its
examples up by index. Changing the shuffle order therefore never changes an example's augmentation
(unlike code that draws augmentations in batch order).
"""

from __future__ import annotations

import torch

from nondet.seeds import derive_seed, torch_generator

#: Training augmentations by name (recipe key augment; the schema's enum lists the same).
KINDS = ("none", "shift", "crop", "crop_flip", "auto")


def shift_offsets(seed: int, epoch: int, n: int, max_shift: int) -> torch.Tensor:
    """Offsets in [0, 2*max_shift] for examples 0..n-1 in ``epoch`` (offset max_shift = no shift)."""
    g = torch_generator(derive_seed(seed, epoch))
    return torch.randint(0, 2 * max_shift + 1, (n,), generator=g)


def shift(x: torch.Tensor, offsets: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Shift each signal of ``x`` (B, C, L) along its last axis, zero padding, by offsets - max_shift."""
    if max_shift == 0:
        return x
    length = x.shape[-1]
    padded = torch.nn.functional.pad(x, (max_shift, max_shift))
    index = offsets.to(x.device)[:, None] + torch.arange(length, device=x.device)[None, :]
    index = index[:, None, :].expand(-1, x.shape[1], -1)
    return torch.gather(padded, 2, index)


def crop_flip_params(seed: int, epoch: int, n: int, pad: int) -> torch.Tensor:
    """Per-example (dy, dx, flip) for images 0..n-1 in ``epoch``; shape (n, 3)."""
    g = torch_generator(derive_seed(seed, epoch))
    crops = torch.randint(0, 2 * pad + 1, (n, 2), generator=g)
    flips = torch.randint(0, 2, (n, 1), generator=g)
    return torch.cat([crops, flips], dim=1)


def pad_image(x: torch.Tensor, pad: int, fill: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` (B, C, H, W) padded by ``pad`` pixels with zeros (after normalisation: the mean
    colour), or with the per-channel value ``fill`` (C,) (e.g. black: -mean/std)."""
    if fill is None:
        return torch.nn.functional.pad(x, (pad, pad, pad, pad))
    b, c, h, w = x.shape
    out = fill.to(x.device, x.dtype).view(1, c, 1, 1).expand(b, c, h + 2 * pad, w + 2 * pad).clone()
    out[:, :, pad : pad + h, pad : pad + w] = x
    return out


def crop_flip(x: torch.Tensor, params: torch.Tensor, pad: int, fill=None) -> torch.Tensor:
    """Random crop of the padded image (:func:`pad_image`) and horizontal flip, batched; x is
    (B, C, H, W)."""
    b, c, h, w = x.shape
    params = params.to(x.device)
    padded = pad_image(x, pad, fill)
    rows = params[:, 0, None] + torch.arange(h, device=x.device)[None, :]  # (B, H)
    cols = params[:, 1, None] + torch.arange(w, device=x.device)[None, :]  # (B, W)
    cols = torch.where(params[:, 2, None].bool(), cols.flip(1), cols)
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


class Augmenter:
    """Augmentation of a training set, keyed by (seed, epoch, example index)."""

    def __init__(self, kind: str, seed: int, n: int, size: int):
        if kind not in KINDS:
            raise ValueError(f"unknown augmentation {kind!r}; known: {', '.join(KINDS)}")
        self.kind, self.seed, self.n, self.size = kind, seed, n, size
        self._epoch, self._params = None, None

    #: per-channel crop padding of images (None = zeros), see :func:`pad_image`; set from the
    #: data set (nondet.training.data.Dataset.pad_fill)
    fill = None

    def __call__(self, x: torch.Tensor, index: torch.Tensor, epoch: int) -> torch.Tensor:
        if self.kind == "none" or self.size == 0:
            return x
        if self.kind == "auto":  # per data kind: shifts of signals, crops of images (no flips)
            self.kind = {2: "none", 3: "shift"}.get(x.dim(), "crop")  # tabular (N, D): none
            if self.kind == "none":
                return x
        if x.dim() != (3 if self.kind == "shift" else 4):
            data = "1-D signals (N, C, L)" if x.dim() == 3 else f"inputs of shape {tuple(x.shape[1:])}"
            fits = "shift" if x.dim() == 3 else ("crop or crop_flip" if x.dim() == 4 else "none")
            raise ValueError(f"training.augment {self.kind!r} does not fit this data set's {data}; use {fits}")
        if self._epoch != epoch:
            make = shift_offsets if self.kind == "shift" else crop_flip_params
            params = make(self.seed, epoch, self.n, self.size)
            if self.kind == "crop":  # the same crops as crop_flip, never flipped (digits, text)
                params[:, 2] = 0
            self._params, self._epoch = params.to(index.device), epoch
        params = self._params[index]
        if self.kind == "shift":
            return shift(x, params, self.size)
        return crop_flip(x, params, self.size, self.fill)
