"""Inference: logits and penultimate features on a test set, optionally with test-time augmentation."""

from __future__ import annotations

import torch

from nondet.training.usermodel import forward_with_features


@torch.no_grad()
def predict(model, x: torch.Tensor, batch_size: int = 1000, bf16: bool = False):
    """(logits, features) of ``model`` in eval mode over ``x``, in batches; float32 tensors.

    ``bf16``: run under bfloat16 autocast, as a model trained with ``recipe.bf16`` was."""
    was_training = model.training
    model.eval()
    logits, features = [], []
    for i in range(0, len(x), batch_size):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            f, z = forward_with_features(model, x[i : i + batch_size])
        logits.append(z.float())
        features.append(f.float())
    model.train(was_training)
    return torch.cat(logits), torch.cat(features)
