"""The one training loop: the epoch/batch skeleton over K >= 1 replicas with a pluggable step.

:func:`run_epochs` holds what every training path shares: resuming from a checkpoint, the epochs,
each step's learning rate, the batches (from each replica's :class:`nondet.training.replica.ReplicaDraws`),
the snapshots, the test-set evaluation, the curves, the log, the divergence stop and the checkpoint
saves. A *stepper* holds the replicas and does the rest:

- :class:`SequentialStep`: one ``nn.Module`` (bf16 autocast, channels_last, user models' other
  draws, recorded steps for the divergence twins), used by :func:`nondet.training.replica.train_replica`;
- :class:`StackedStep`: K replicas' parameters stacked, stepped by ``torch.func.vmap`` or by the
  wide model of :mod:`nondet.training.wide`, used by :func:`nondet.training.vectorized.train_replicas_vectorized`.

The loss (:func:`loss`) and the evaluation (:func:`evaluate`) are written once for all of them.
Each path keeps its arithmetic (and so its results, bitwise) and its checkpoint layout: the
sequential one reduces the epoch's metrics in Python floats, the stacked one in float32 tensors.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad_and_value, vmap

from nondet.training.predict import predict
from nondet.training.recipe import Bookkeeping
from nondet.training.usermodel import training_draws

# --- curves, learning rate, checkpoints -------------------------------------------------------
from nondet.training.wide import forward as wide_forward


def set_lr(opt, lr: float) -> None:
    """Set the step's learning rate, times each parameter group's ``lr_scale``
    (nondet.training.models.weight_decay_groups); the training loop calls this."""
    for group in opt.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def state_to_numpy(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


class Curve:
    """Per-epoch training curve."""

    KEYS = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc")

    def __init__(self, values: dict | None = None):
        self.values = values if values is not None else {k: [] for k in self.KEYS}

    def add(self, epoch, lr, train_loss, train_acc, test_loss, test_acc) -> None:
        for key, value in zip(self.KEYS, (epoch, lr, train_loss, train_acc, test_loss, test_acc)):
            self.values[key].append(float(value))

    def __len__(self) -> int:
        return len(self.values["epoch"])

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=np.float64) for k, v in self.values.items()}


def _plain(obj):
    """``obj`` with every NumPy array as a tagged tensor and NumPy scalars as Python ones, so a
    checkpoint holds only what ``torch.load(weights_only=True)`` reads (no pickled objects)."""
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.array(obj, copy=True))}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def _unplain(obj):
    """The inverse of :func:`_plain` (tagged tensors back to NumPy arrays, bitwise)."""
    if isinstance(obj, dict):
        if obj.keys() == {"__ndarray__"}:
            return obj["__ndarray__"].cpu().numpy()
        return {k: _unplain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unplain(v) for v in obj)
    return obj


def load_checkpoint(path, key: dict, device, log=print, label: str = "") -> dict | None:
    """The checkpoint at ``path`` if it was written by the run ``key`` describes, else None.

    Read with ``torch.load(weights_only=True)``: a file holding pickled objects (from a colleague,
    a cluster, anyone) is refused without running any of its code. Any file that cannot be read
    so (damaged, truncated, random bytes, pickled objects, another layout) is ignored, saying so,
    and the replica is trained from the start."""
    if path is None or not os.path.exists(path):
        return None
    try:
        state = _unplain(torch.load(path, map_location=device, weights_only=True))
        if not isinstance(state, dict) or not isinstance(state.get("key"), dict):
            raise ValueError("not a nondet checkpoint (no job key)")
    except Exception as e:  # noqa: BLE001 (anything unreadable: start over, say so)
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        log(f"{label} ignoring checkpoint {path}: it cannot be read ({reason}); retraining")
        return None
    if state["key"] != key:
        differs = sorted(k for k in {*key, *state["key"]} if key.get(k) != state["key"].get(k))
        log(f"{label} ignoring checkpoint {path}: it belongs to a different run ({', '.join(differs)} differ)")
        return None
    log(f"{label} resuming from checkpoint {path} after epoch {state['epoch']}")
    return state


def save_checkpoint(path, key: dict, **state) -> None:
    """Write resumable state atomically (a kill mid-write leaves the previous checkpoint; a
    failed write, e.g. a full disk, leaves no temporary file and says which file and why).
    Only tensors and plain types are stored (NumPy arrays as tagged tensors, :func:`_plain`)."""
    from nondet.io.h5io import atomic_write

    payload = _plain({"key": key, **state})
    atomic_write(path, lambda tmp: torch.save(payload, tmp), "checkpoint")


# --- the loss and the evaluation, written once ---------------------------------------------------


def loss(logits: torch.Tensor, y: torch.Tensor, replicas: bool = False) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` (B, C) against ``y`` (B,); with ``replicas``, of the K
    replicas' logits (K, B, C) against ``y`` (K, B), one mean per replica (K,)."""
    if replicas:
        k = len(logits)
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none").view(k, -1).mean(1)
    return F.cross_entropy(logits.float(), y)


@torch.no_grad()
def evaluate(z: torch.Tensor, y: torch.Tensor, scalar: bool) -> tuple[np.ndarray, np.ndarray]:
    """(test loss, test accuracy in %) of each replica from its logits ``z`` (K, N, C);
    ``scalar``: the accuracy's percentage taken in a Python float (the sequential path)."""
    test_loss = torch.stack([loss(z[r], y) for r in range(len(z))]).cpu().numpy()
    hit = (z.argmax(-1) == y).float().mean(-1)
    if scalar:
        return test_loss, np.array([100.0 * float(h) for h in hit])
    return test_loss, (100.0 * hit).cpu().numpy()


def _finite_mean(values) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def format_duration(seconds: float) -> str:
    """A duration for a log line: 45s, 12m05s, 3h07m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def run_epochs(stepper, sched, draws_list, data, book: Bookkeeping, key: dict, averages=None):
    """Train ``stepper``'s K replicas (draws ``draws_list``) on the schedule ``sched``, logging to
    ``book.log``, resuming from and saving to ``book.checkpoint`` (job key ``key``); returns (curves,
    snapshots, diverged), one each per replica. ``averages``: weight averages kept while training
    (nondet.training.averaging.Averages; they read the weights after every step and epoch, and
    travel in the checkpoints)."""
    device, label, log, checkpoint = stepper.device, book.label, book.log, book.checkpoint
    k, n = stepper.k, sched.n
    curves, snapshots = [Curve() for _ in range(k)], [[] for _ in range(k)]
    diverged, start_epoch, step = np.zeros(k, dtype=bool), 0, 0
    state = load_checkpoint(checkpoint, key, device, log, label)
    if state is not None:
        start_epoch, step, curves, snapshots, diverged = stepper.load(state)
        if averages:
            averages.load(state["averages"])
        if diverged.all():
            start_epoch = sched.epochs

    def save(epochs_done):
        extra = {"averages": averages.state()} if averages else {}
        save_checkpoint(checkpoint, key, **stepper.state(epochs_done, step, curves, snapshots, diverged), **extra)

    times = []  # seconds per epoch of this process, for the ETA
    for epoch in range(start_epoch, sched.epochs):
        stepper.train()
        t0 = time.perf_counter()
        orders = [d.order(epoch) for d in draws_list]
        loss_sum, correct, lr = torch.zeros(k, device=device), torch.zeros(k, device=device), 0.0
        for b in range(sched.steps_per_epoch):
            stepper.at_step(step)
            x, y, masks = stepper.batch(draws_list, orders, epoch, b, data)
            lr = sched.lr(step)
            set_lr(stepper.opt, lr)
            losses, logits = stepper.step(x, y, masks, step)
            loss_sum += losses.detach() * y.shape[-1]
            correct += (logits.argmax(-1) == y).sum(-1)
            step += 1
            if averages:
                averages.after_step(step)
            if sched.snapshot_due(step):
                for r in range(k):
                    snapshots[r].append(stepper.replica_state(r))
        if stepper.scalar:
            train_loss = np.array([float(loss_sum[0]) / n])
            train_acc = np.array([100.0 * float(correct[0]) / n])
        else:
            train_loss = (loss_sum / n).cpu().numpy()
            train_acc = (100.0 * correct / n).cpu().numpy()
        test_loss = test_acc = np.full(k, np.nan)
        if sched.eval_due(epoch + 1):
            test_loss, test_acc = evaluate(stepper.predict(data.x_test), data.y_test, stepper.scalar)
        for r in range(k):
            curves[r].add(epoch + 1, lr, train_loss[r], train_acc[r], test_loss[r], test_acc[r])
        diverged |= ~np.isfinite(train_loss)
        if averages:
            averages.after_epoch(epoch + 1)
        took = time.perf_counter() - t0
        times.append(took)
        # test accuracy only in epochs that evaluated it (eval_every); no placeholder otherwise
        evaluated = sched.eval_due(epoch + 1)
        left = sched.epochs - epoch - 1
        eta = f", ETA {format_duration(left * sum(times) / len(times))}" if left else ""
        if stepper.scalar:
            test = f" test_acc {test_acc[0]:.1f}%" if evaluated and np.isfinite(test_acc[0]) else ""
            log(
                f"{label} epoch {epoch + 1}/{sched.epochs} loss {train_loss[0]:.4f} "
                f"train_acc {curves[0].values['train_acc'][-1]:.1f}%{test} "
                f"lr {lr:.3g} ({took:.2f}s{eta})"
            )
        else:
            mean_acc = _finite_mean(test_acc)
            test = f" test_acc {mean_acc:.1f}%" if evaluated and np.isfinite(mean_acc) else ""
            alive = int((~diverged).sum())
            note = f", {k - alive} diverged" if alive < k else ""
            log(
                f"{label} epoch {epoch + 1}/{sched.epochs} ({k} replicas vectorised{note}) loss "
                f"{_finite_mean(train_loss):.4f}{test} lr {lr:.3g} ({took:.2f}s{eta})"
            )
        if diverged.all():
            if stepper.scalar:
                log(f"{label} DIVERGED: training loss is {train_loss[0]} in epoch {epoch + 1}; stopping")
            else:
                log(f"{label} DIVERGED: every replica's training loss is NaN/inf; stopping")
            break
        if checkpoint is not None and book.checkpoint_every and (epoch + 1) % book.checkpoint_every == 0:
            save(epoch + 1)

    stepper.at_step(step)
    if checkpoint is not None and start_epoch < sched.epochs:
        save(len(curves[0]))  # a finished run is skipped on resume
    return curves, snapshots, diverged


class SequentialStep:
    """One replica as an ``nn.Module`` (K = 1); checkpoint layout: model, optimizer, epoch, step,
    curve, snapshots, records, diverged."""

    k, scalar = 1, True

    def __init__(self, model, opt, dropout_seed, device, x_test, bf16=False, channels_last=False, record_steps=()):
        self.model, self.opt, self.dropout_seed, self.device = model, opt, dropout_seed, device
        self.x_test, self.bf16, self.channels_last = x_test, bf16, channels_last
        self.record_at, self.records = set(int(s) for s in record_steps), []

    def train(self):
        self.model.train()

    def at_step(self, step):
        """Record the flat parameters and the test logits after ``step`` steps, if asked to."""
        if step in self.record_at:
            params = torch.cat([p.detach().flatten() for p in self.model.parameters()])
            logits = predict(self.model, self.x_test, bf16=self.bf16)[0]
            self.records.append((step, params.cpu().numpy().copy(), logits))

    def batch(self, draws_list, orders, epoch, b, data):
        _, x, y = draws_list[0].batch(orders[0], epoch, b, data)
        return x, y, None

    def step(self, x, y, masks, step):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with (
            torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16),
            training_draws(self.model, self.dropout_seed, step, self.device),  # user models' other draws
        ):
            logits = self.model(x)
            value = loss(logits, y)
        self.opt.zero_grad(set_to_none=True)
        value.backward()
        self.opt.step()
        return value, logits

    def predict(self, x):
        return predict(self.model, x, bf16=self.bf16)[0].unsqueeze(0)

    def replica_state(self, r):
        return state_to_numpy(self.model)

    def state(self, epoch, step, curves, snapshots, diverged) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "epoch": epoch,
            "step": step,
            "curve": curves[0].values,
            "snapshots": snapshots[0],
            "records": self.records,
            "diverged": bool(diverged[0]),
        }

    def load(self, state):
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.records = state["records"]
        diverged = np.array([bool(state["diverged"])])
        return state["epoch"], state["step"], [Curve(state["curve"])], [state["snapshots"]], diverged


class StackedStep:
    """K replicas' parameters and buffers stacked (K, ...), one step for all of them, by
    ``torch.func.vmap`` over the model ``base`` (on the meta device) or, ``wide``, as one wide model
    (nondet.training.wide); checkpoint layout: params, buffers, optimizer, epoch, step, curves, snapshots,
    diverged."""

    scalar = False

    def __init__(self, base, params, buffers, opt, drop_shapes, model_spec, device, wide=False, eval_batch_size=1000):
        self.base, self.params, self.buffers, self.opt = base, params, buffers, opt
        self.drop_shapes, self.model_spec, self.device = drop_shapes, model_spec, device
        self.wide, self.eval_batch_size = wide, eval_batch_size
        self.k = len(next(iter(params.values())))

        def loss_fn(p, b, masks, x, y):
            out = functional_call(base, {**p, **b, **masks}, (x,))
            return loss(out, y), out

        self.vmapped = vmap(grad_and_value(loss_fn, has_aux=True))
        if wide:
            for p in params.values():
                p.requires_grad_(True)

    def train(self):
        pass

    def at_step(self, step):
        pass

    def batch(self, draws_list, orders, epoch, b, data):
        xs, ys, masks = [], [], {name: [] for name in self.drop_shapes}
        for d, order in zip(draws_list, orders):
            _, x, y = d.batch(order, epoch, b, data)
            xs.append(x)
            ys.append(y)
            for (name, shape), m in zip(self.drop_shapes.items(), d.masks):
                masks[name].append(m.lookup(shape, self.device))
        masks = {f"{name}.external_mask": torch.stack(v) for name, v in masks.items()}
        return torch.stack(xs), torch.stack(ys), masks

    def step(self, x, y, masks, step):
        """Each replica's loss and logits for its batch ``x[r]``, ``y[r]``, after its update."""
        params = self.params
        if self.wide:
            out = wide_forward(params, self.buffers, masks, x, True, self.model_spec)
            value = loss(out, y, replicas=True)
            grads = dict(zip(params, torch.autograd.grad(value.sum(), list(params.values()))))
            value, out = value.detach(), out.detach()
        else:
            grads, (value, out) = self.vmapped(params, self.buffers, masks, x, y)
        for name, p in params.items():
            p.grad = grads[name]
        self.opt.step()
        return value, out

    @torch.no_grad()
    def predict(self, x):
        """Logits of every replica on ``x``, (k, len(x), classes), in batches like predict."""
        size, params, buffers = self.eval_batch_size, self.params, self.buffers
        if self.wide:
            return torch.cat(
                [
                    wide_forward(
                        params, buffers, None, x[i : i + size].expand(self.k, -1, -1, -1), False, self.model_spec
                    )
                    for i in range(0, len(x), size)
                ],
                dim=1,
            )
        base = self.base
        base.eval()
        out = torch.cat(
            [
                vmap(lambda p, b: functional_call(base, {**p, **b}, (x[i : i + size],)))(params, buffers)
                for i in range(0, len(x), size)
            ],
            dim=1,
        )
        base.train()
        return out

    def replica_state(self, r):
        return {
            **{name: p[r].detach().cpu().numpy().copy() for name, p in self.params.items()},
            **{name: b[r].cpu().numpy().copy() for name, b in self.buffers.items()},
        }

    def state(self, epoch, step, curves, snapshots, diverged) -> dict:
        return {
            "params": self.params,
            "buffers": self.buffers,
            "optimizer": self.opt.state_dict(),
            "epoch": epoch,
            "step": step,
            "curves": [c.values for c in curves],
            "snapshots": snapshots,
            "diverged": diverged,
        }

    def load(self, state):
        with torch.no_grad():
            for name, value in state["params"].items():
                self.params[name].copy_(value)
            for name, value in state["buffers"].items():
                self.buffers[name].copy_(value)
        self.opt.load_state_dict(state["optimizer"])
        curves = [Curve(c) for c in state["curves"]]
        return state["epoch"], state["step"], curves, state["snapshots"], state["diverged"]
