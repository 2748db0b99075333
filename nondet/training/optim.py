"""Stochastic gradient descent with (Nesterov) momentum and per-group weight decay.

The arithmetic of ``torch.optim.SGD``, operation for operation (its per-tensor path on CPU, its
``foreach`` path on CUDA, which are torch's defaults there), so results are bitwise those of
``torch.optim.SGD`` (tests/test_training.py checks it). It exists because ``torch.optim`` imports
TorchDynamo on first use (``Optimizer.__init__`` and ``step``), about 1.2 s per process: on the
default protocol's small models that is a tenth of a training job. ``state_dict`` has
``torch.optim.SGD``'s layout, so checkpoints read either way.
"""

from __future__ import annotations

import torch

_DEFAULTS = {"momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False}


class SGD:
    """``SGD(param_groups, lr, momentum=..., nesterov=...)`` as ``torch.optim.SGD``; each group
    may set its own ``weight_decay`` and carry other keys (``lr_scale``) untouched."""

    def __init__(self, params, lr: float, foreach: bool | None = None, **defaults):
        """``foreach``: the multi-tensor update (None: on CUDA only, as torch's default)."""
        self.foreach = foreach
        unknown = set(defaults) - set(_DEFAULTS)
        if unknown:
            raise TypeError(f"SGD got unknown options {sorted(unknown)}")
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups = [{**_DEFAULTS, "lr": lr, **defaults, **g, "params": list(g["params"])} for g in groups]
        for g in self.param_groups:
            if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
                raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        self._buffers: dict[int, torch.Tensor] = {}  # momentum buffer per parameter index

    def _indexed(self):
        i = 0
        for g in self.param_groups:
            yield g, list(range(i, i + len(g["params"])))
            i += len(g["params"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        for g, index in self._indexed():
            live = [(i, p) for i, p in zip(index, g["params"]) if p.grad is not None]
            if not live:
                continue
            if self.foreach or (self.foreach is None and live[0][1].device.type == "cuda"):
                self._step_foreach(g, live)
            else:
                self._step_each(g, live)

    def _step_each(self, g, live) -> None:
        wd, momentum, lr = g["weight_decay"], g["momentum"], g["lr"]
        for i, p in live:
            grad = p.grad
            if wd != 0:
                grad = grad.add(p, alpha=wd)
            if momentum != 0:
                buf = self._buffers.get(i)
                if buf is None:
                    buf = self._buffers[i] = grad.detach().clone()
                else:
                    buf.mul_(momentum).add_(grad, alpha=1 - g["dampening"])
                grad = grad.add(buf, alpha=momentum) if g["nesterov"] else buf
            p.add_(grad, alpha=-lr)

    def _step_foreach(self, g, live) -> None:
        wd, momentum, lr = g["weight_decay"], g["momentum"], g["lr"]
        index, params = [i for i, _ in live], [p for _, p in live]
        grads = [p.grad for p in params]
        if wd != 0:
            grads = torch._foreach_add(grads, params, alpha=wd)
        if momentum != 0:
            if all(i in self._buffers for i in index):
                bufs = [self._buffers[i] for i in index]
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, grads, alpha=1 - g["dampening"])
            else:  # first step: the buffer starts as the gradient
                bufs = [self._buffers.setdefault(i, gr.detach().clone()) for i, gr in zip(index, grads)]
            grads = torch._foreach_add(grads, bufs, alpha=momentum) if g["nesterov"] else bufs
        torch._foreach_add_(params, grads, alpha=-lr)

    def state_dict(self) -> dict:
        """``torch.optim.SGD.state_dict()``'s layout: state by parameter index, groups by index."""
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": index} for g, index in self._indexed()]
        return {"state": {i: {"momentum_buffer": b} for i, b in sorted(self._buffers.items())}, "param_groups": groups}

    def load_state_dict(self, state: dict) -> None:
        sizes = [len(g["params"]) for g in self.param_groups]
        saved = [len(g["params"]) for g in state["param_groups"]]
        if sizes != saved:
            raise ValueError(f"optimizer state has groups of {saved} parameters, this model {sizes}")
        params = [p for g in self.param_groups for p in g["params"]]
        self._buffers = {}
        for i, s in state["state"].items():
            buf = s.get("momentum_buffer")
            if buf is not None:
                self._buffers[int(i)] = buf.to(device=params[int(i)].device, dtype=params[int(i)].dtype).clone()
        for g, s in zip(self.param_groups, state["param_groups"]):
            g.update({k: v for k, v in s.items() if k != "params"})
