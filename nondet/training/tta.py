"""Test-time augmentation: average the logits of the original input and augmented views.

Views suited to the data: for 1-D signals, shifts by -size..size at a stride (zero padded, the
training augmentation); for images, a horizontal flip, all crops of the zero-padded image at a
stride, or both combined.
"""

from __future__ import annotations

import torch

from nondet.methods import TTA_PRESETS
from nondet.training.augment import crop_flip, shift

#: The authors' TTA sets by name (nondet.methods.TTA_PRESETS, kept light for the Snakefile).
PRESETS = TTA_PRESETS

#: TTA kinds (a spec's kind; auto is resolved per data kind by :func:`fit_kind`).
KINDS = ("shift", "flip", "crops", "flip+crops", "auto")


def make_views(spec: dict | None, fill=None) -> list[tuple[str, object]]:
    """Named view functions for ``spec`` = {kind, size, stride, original}; the identity first.
    ``fill``: per-channel crop padding of images (None = zeros; nondet.training.augment.pad_image).

    The augmented views: shifts by -size..size at ``stride`` (kind shift); the horizontal flip
    (flip); every crop of the ``size``-padded image at ``stride`` (crops); all of those crops of
    the image and of its flip (flip+crops). ``original``: ``once`` (default) = a view equal to the
    original (zero shift, centre crop) is not repeated; ``extra`` = the original is averaged in
    addition to every augmented view (the authors' counting, :data:`PRESETS`).
    """
    views = [("identity", lambda x: x)]
    if not spec:
        return views
    kind, size, stride = spec["kind"], int(spec["size"]), int(spec.get("stride", 1))
    extra = spec.get("original", "once") == "extra"
    if kind == "shift":
        for off in range(-size, size + 1, stride):
            if off != 0 or extra:
                views.append((f"shift{off:+d}", _shift_view(off, size)))
        return views
    if kind not in KINDS or kind == "auto":  # auto: resolved by fit_kind before views are made
        raise ValueError(f"unknown TTA kind {kind!r}; known: {', '.join(k for k in KINDS if k != 'auto')}")
    crops = kind in ("crops", "flip+crops")
    flips = {"flip": [1], "crops": [0], "flip+crops": [0, 1]}[kind]
    offsets = range(0, 2 * size + 1, stride) if crops else [size]
    for flip in flips:
        for dy in offsets:
            for dx in offsets:
                if (dy, dx, flip) != (size, size, 0) or extra:
                    views.append(
                        (
                            f"crop{dy - size:+d}{dx - size:+d}" + ("flip" if flip else ""),
                            _crop_view(dy, dx, flip, size, fill),
                        )
                    )
    return views


def fit_kind(spec: dict | None, x) -> dict | None:
    """``spec`` with kind ``auto`` resolved: shifts for 1-D signals, crops for images."""
    if spec and spec["kind"] == "auto":
        return {**spec, "kind": "shift" if x.dim() == 3 else "crops"}
    return spec


def check_fits(spec: dict | None, x) -> None:
    """Fail with a clear message when the TTA kind does not fit the data (shift: 1-D signals;
    flip, crops: images)."""
    if not spec:
        return
    want = 3 if fit_kind(spec, x)["kind"] == "shift" else 4
    if x.dim() != want:
        fits = "shift" if x.dim() == 3 else "crops (or flip / flip+crops for natural images)"
        raise ValueError(
            f"mitigation.tta.kind {spec['kind']!r} does not fit test inputs of shape {tuple(x.shape[1:])}; use {fits}"
        )


def _shift_view(offset: int, size: int):
    def view(x):
        return shift(x, torch.full((len(x),), offset + size, dtype=torch.long), size)

    return view


def _crop_view(dy: int, dx: int, flip: int, pad: int, fill=None):
    def view(x):
        params = torch.tensor([[dy, dx, flip]], dtype=torch.long).expand(len(x), 3)
        return crop_flip(x, params, pad, fill)

    return view


@torch.no_grad()
def predict_tta(model, x: torch.Tensor, views, batch_size: int = 1000, bf16: bool = False):
    """(mean logits over views, identity-view features); with only the identity = plain predict."""
    from nondet.training.predict import predict

    logits, features = predict(model, x, batch_size, bf16)
    for _, view in views[1:]:
        logits = logits + predict(model, view(x), batch_size, bf16)[0]
    return logits / len(views), features
