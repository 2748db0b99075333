"""Weight averaging while a run trains: an exponential moving average of the weights (EMA) and
stochastic weight averaging (SWA, Izmailov et al. 2018), with ``torch.optim.swa_utils``.

A recipe's ``averages`` key asks for them, e.g. ``{"ema": {"decay": 0.99}, "swa": {"start":
0.75}}``. They only read the weights, so the run itself (its trajectory, final weights, curves)
is bitwise what it is without them, and they draw nothing random:

- ``ema``: after every optimiser step, ``avg = decay * avg + (1 - decay) * w``
  (``swa_utils.get_ema_multi_avg_fn``; the first step copies ``w``), over the parameters and
  the BatchNorm running statistics alike (``AveragedModel(use_buffers=True)``'s convention;
  integer buffers such as ``num_batches_tracked`` are copied); with ``bn: recompute`` (the
  config's default) BatchNorm's statistics are then recomputed for the averaged weights as for
  SWA. Averaged statistics do not fit averaged weights when the weights' scale drifts (weight
  decay under BatchNorm): on the default run they cost 5-14 points of accuracy (docs/results.md);
- ``swa``: the equal average (``swa_utils.get_swa_multi_avg_fn``) of the weights at the end of
  every epoch after the first ``floor(start * epochs)`` epochs (15 epochs, start 0.75: the ends
  of epochs 12..15, 4 models), along the recipe's own learning-rate schedule; then BatchNorm's
  running statistics are recomputed for the averaged weights by ``swa_utils.update_bn``: one
  pass over the replica's own training examples (its resample under the ``data`` source) in
  their stored order, unaugmented, in batches of the recipe's batch size, with every module
  other than BatchNorm in eval mode (so dropout draws nothing).

K replicas stacked (the vectorised paths) are averaged element by element exactly as one is, and
the averages travel in the checkpoints, so a run resumed after a kill ends bitwise equal.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn, get_swa_multi_avg_fn, update_bn

from nondet.seeds import torch_generator
from nondet.training.loop import state_to_numpy
from nondet.training.models import build_model

KINDS = ("ema", "swa")


def check(averages: dict | None) -> dict:
    """``averages`` ({kind: its keys}), checked; fails naming the key and what is valid."""
    averages = dict(averages or {})
    for kind, spec in averages.items():
        if kind not in KINDS:
            raise ValueError(f"recipe.averages: unknown kind {kind!r}; known: {', '.join(KINDS)}")
        if kind == "ema" and not 0.0 < float(spec.get("decay", -1)) < 1.0:
            raise ValueError(f"mitigation.ema.decay must lie in (0, 1), not {spec.get('decay')!r}")
        if kind == "ema" and spec.get("bn", "average") not in ("average", "recompute"):
            raise ValueError(f"mitigation.ema.bn must be average or recompute, not {spec.get('bn')!r}")
        if kind == "swa" and not 0.0 <= float(spec.get("start", -1)) < 1.0:
            raise ValueError(f"mitigation.swa.start must lie in [0, 1), not {spec.get('start')!r}")
    return averages


class Averages:
    """The averaged weights of a run's K >= 1 replicas, kept beside its live tensors.

    ``tensors()``: the live parameters and buffers by state-dict name (stacked (K, ...) on the
    vectorised paths); :meth:`after_step` and :meth:`after_epoch` update the averages."""

    def __init__(self, averages: dict, epochs: int, tensors):
        self.specs, self.tensors = check(averages), tensors
        self.swa_from = math.floor(self.specs["swa"]["start"] * epochs) if "swa" in self.specs else None
        self.avg = {kind: None for kind in self.specs}  # kind -> {name: tensor}, None before the first update
        self.count = dict.fromkeys(self.specs, 0)
        self._fn = {
            kind: get_ema_multi_avg_fn(float(spec["decay"])) if kind == "ema" else get_swa_multi_avg_fn()
            for kind, spec in self.specs.items()
        }

    def __bool__(self) -> bool:
        return bool(self.specs)

    @torch.no_grad()
    def _update(self, kind: str) -> None:
        live = self.tensors()
        if self.avg[kind] is None:
            self.avg[kind] = {name: t.detach().clone() for name, t in live.items()}
        else:
            avg = self.avg[kind]
            floats = [n for n, t in live.items() if t.is_floating_point()]
            if floats:
                self._fn[kind]([avg[n] for n in floats], [live[n].detach() for n in floats], self.count[kind])
            for n, t in live.items():
                if not t.is_floating_point():
                    avg[n].copy_(t)
        self.count[kind] += 1

    def after_step(self, steps_done: int) -> None:
        if "ema" in self.specs:
            self._update("ema")

    def after_epoch(self, epochs_done: int) -> None:
        if "swa" in self.specs and epochs_done > self.swa_from:
            self._update("swa")

    def state(self) -> dict:
        """For a checkpoint: the averages and how many weights each holds."""
        return {"avg": self.avg, "count": self.count}

    @torch.no_grad()
    def load(self, state: dict) -> None:
        self.count = dict(state["count"])
        self.avg = {k: None if v is None else {n: t.clone() for n, t in v.items()} for k, v in state["avg"].items()}

    def replica(self, kind: str, r: int | None) -> dict[str, torch.Tensor]:
        """Replica ``r``'s averaged tensors (``r`` None: one unstacked replica)."""
        avg = self.avg[kind]
        if avg is None:
            raise RuntimeError(f"no {kind} average: training ran no step that updates it")
        return {n: t if r is None else t[r] for n, t in avg.items()}

    def finish(self, stacked: bool, model_spec: dict, data, device, batch_size: int, examples, bf16=False):
        """Per replica, {kind: its averaged state dict as NumPy arrays}, SWA's BatchNorm
        statistics recomputed; ``examples``: per replica, its training example indices (None:
        all); ``stacked``: the tensors hold K = len(examples) replicas stacked."""
        out = []
        for r in range(len(examples)):
            states = {}
            for kind in self.specs:
                weights = self.replica(kind, r if stacked else None)
                if kind == "swa" or self.specs[kind].get("bn", "average") == "recompute":
                    states[kind] = recompute_bn(weights, model_spec, data, device, batch_size, examples[r], bf16)
                else:
                    states[kind] = {n: t.detach().cpu().numpy().copy() for n, t in weights.items()}
            out.append(states)
        return out


class _BatchNormOnly(nn.Module):
    """``model`` for ``update_bn``: its train() puts only the BatchNorm layers in training mode,
    so dropout (and any other stochastic layer of a user's model) draws nothing."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def train(self, mode: bool = True):
        self.training = mode
        self.model.eval()
        for m in self.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train(mode)
        return self

    def forward(self, x):
        return self.model(x)


def recompute_bn(weights: dict, model_spec: dict, data, device, batch_size: int, index=None, bf16=False) -> dict:
    """``weights`` with BatchNorm's running statistics recomputed by ``swa_utils.update_bn`` over
    the training examples ``index`` (None: all) in order, unaugmented; as NumPy arrays."""
    model = build_model(model_spec, data.input_shape, data.num_classes, torch_generator(0), device)
    model.load_state_dict({n: t.detach() for n, t in weights.items()})
    x = data.x_train if index is None else data.x_train[index]
    batches = [x[i : i + batch_size] for i in range(0, len(x), batch_size)]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        update_bn(batches, _BatchNormOnly(model))
    model.eval()
    return state_to_numpy(model)
