"""K replicas of the built-in ``cnn1d`` computed as one wide model: the CPU fast path of
vectorised training (``vectorize: auto`` on a CPU, see nondet.training.vectorized).

The replicas' stacked parameters (K, ...) are viewed as one grouped convolution per layer (group k
= replica k; each replica's batch sits in its own channel group), one BatchNorm over K x C channels
(per-channel statistics, so per replica), a per-replica mean pool, dropout with each replica's
masks and a batched matrix product for the classifier. The activations are channels-last 2-D
tensors of height 1, the layout in which oneDNN's convolutions and PyTorch's CPU BatchNorm
vectorise over channels. Each replica's arithmetic reads only its own group, so a replica's result
is a function of its own seeds (and of K, which sets the kernels' shapes), never of the other
replicas' values; it is not bitwise the same as the replica trained alone (other kernels, other
summation orders). Measured on a 2-core CPU: about half the time per replica-step of sequential
training for 8 replicas (BENCHMARKS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supports(model_spec: dict) -> bool:
    """Whether the wide path implements ``model_spec`` (the built-in 1-D CNN only)."""
    return model_spec.get("arch") == "cnn1d"


def forward(
    params: dict,
    buffers: dict,
    masks: dict | None,
    x: torch.Tensor,
    training: bool,
    model_spec: dict,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Logits (K, B, classes) of the K stacked replicas of ``nondet.training.models.CNN1d``.

    ``params``/``buffers``: CNN1d's state dict entries stacked over replicas (K, ...); in training
    mode BatchNorm's running statistics and batch counters update in place there, as
    ``nn.BatchNorm1d`` does. ``masks``: ``{"dropout.external_mask": (K, B, channels)}`` keep-masks
    (training only). ``x``: (K, B, C, L), replica k's batch at ``x[k]``.
    """
    k, b, c_in, length = x.shape
    keep = 1.0 - float(model_spec.get("dropout", 0.1))
    kernels = model_spec.get("kernels", [5, 3, 3])
    # (B, K * C, 1, L): example row b of every replica, replica k's channels in group k
    h = x.permute(1, 0, 2, 3).reshape(b, k * c_in, 1, length)
    h = h.contiguous(memory_format=torch.channels_last)
    for layer, size in enumerate(kernels):
        conv, bn = f"body.{3 * layer}", f"body.{3 * layer + 1}"
        w = params[f"{conv}.weight"]  # (K, out, in, size)
        w = w.reshape(k * w.shape[1], w.shape[2], 1, size).contiguous(memory_format=torch.channels_last)
        h = F.conv2d(h, w, None, (1, 2), (0, size // 2), 1, k)
        if training:
            buffers[f"{bn}.num_batches_tracked"].add_(1)
        h = F.batch_norm(
            h,
            buffers[f"{bn}.running_mean"].view(-1),
            buffers[f"{bn}.running_var"].view(-1),
            params[f"{bn}.weight"].reshape(-1),
            params[f"{bn}.bias"].reshape(-1),
            training,
            momentum,
            eps,
        )
        h = F.relu(h)
    h = h.mean((2, 3)).view(b, k, -1).transpose(0, 1)  # (K, B, channels)
    if training and keep < 1.0:
        h = h * masks["dropout.external_mask"] / keep
    return torch.baddbmm(params["fc.bias"].unsqueeze(1), h, params["fc.weight"].transpose(1, 2))
