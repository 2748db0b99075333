"""A researcher's own model, named by import path (``models.<name>.arch: "mypkg.models:build"``).

The callable is ``build(input_shape, num_classes, **params) -> nn.Module``; its module's
``forward(x)`` returns logits of shape (batch, num_classes). Everything else stays the pipeline's:

- init: the module is built inside a forked global RNG (``torch.random.fork_rng``) whose CPU
  generator is seeded with the replica's ``init`` seed, so the user's own initialisation draws
  from that source alone and the global state outside is untouched;
- dropout: every plain ``nn.Dropout`` is replaced by :class:`nondet.training.dropout.SeededDropout` with
  the same p, so its masks are keyed by (dropout seed, epoch, example index, layer) like the
  built-in models'; any other stochastic layer (``nn.Dropout2d``, stochastic depth, noise
  layers, ...) draws from the global RNG, which each training forward pass forks and seeds from
  (dropout seed, step): those draws are keyed per *step*, not per example, so a new data order
  hands an example different draws (documented in the README);
- features for CKA: the output of the module named by ``features`` (a forward hook), flattened;
  without it, CKA is computed on the logits (the table's ``cka_on`` column says which).

:func:`check_model` runs every check a user can fail (import, callable, parameters, returned
module, output shape, feature module, dropout) before any training, naming the model.
"""

from __future__ import annotations

import contextlib
import inspect

import torch
from torch import nn

from nondet.io.callables import ModelError, add_pythonpath, resolve  # noqa: F401 (re-exported)
from nondet.seeds import derive_seed
from nondet.training.dropout import SeededDropout

#: Key that separates the per-step global-RNG seeds from the dropout masks' (seed, epoch, layer).
GLOBAL_RNG_KEY = 7

#: Attribute set on a user's module: the name of its feature module, or "" for the logits.
FEATURES_ATTR = "nondet_features"


def is_user_arch(arch: str) -> bool:
    return ":" in str(arch)


def check_params(fn, params: dict, target: str, what: str) -> None:
    """Fail if ``fn(input_shape, num_classes, **params)`` would not bind."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins without a signature: the call itself will tell
    try:
        sig.bind((1,), 2, **params)
    except TypeError as e:
        accepted = [p for p in list(sig.parameters)[2:]]
        raise ModelError(
            f"{what}: {target} does not accept params {sorted(params)} ({e}); it takes "
            f"(input_shape, num_classes{''.join(', ' + p for p in accepted)})"
        ) from None


@contextlib.contextmanager
def seeded_global_rng(seed: int, device=None):
    """The global RNG (CPU, and ``device`` if CUDA) forked and seeded with ``seed``; restored after."""
    device = torch.device(device or "cpu")
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(int(seed))
        if cuda:
            torch.cuda.default_generators[cuda[0]].manual_seed(int(seed))
        yield


def replace_dropout(module: nn.Module) -> int:
    """Swap every plain nn.Dropout for SeededDropout(p), in place; returns how many."""
    count = 0
    for name, child in list(module.named_children()):
        if type(child) is nn.Dropout:
            setattr(module, name, SeededDropout(child.p))
            count += 1
        else:
            count += replace_dropout(child)
    return count


def build_user_model(spec: dict, in_shape, num_classes: int, init_seed: int, name: str = ""):
    """The user's module with its own init drawn from ``init_seed``, dropout made seeded."""
    what = f"model {name} ({spec['arch']})" if name else f"model {spec['arch']!r}"
    fn = resolve(spec["arch"], spec.get("pythonpath"), what)
    params = dict(spec.get("params") or {})
    check_params(fn, params, spec["arch"], what)
    with seeded_global_rng(init_seed):
        model = fn(tuple(int(s) for s in in_shape), int(num_classes), **params)
        if not isinstance(model, nn.Module):
            raise ModelError(f"{what}: the callable returned a {type(model).__name__}, not an nn.Module")
        if any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters()):
            _materialise(model, in_shape, what)  # lazy modules: their init also from the init seed
    replace_dropout(model)
    features = spec.get("features") or ""
    if features:
        try:
            model.get_submodule(features)
        except AttributeError:
            names = ", ".join(n for n, _ in model.named_modules() if n)
            raise ModelError(f"{what}: features {features!r} is not a submodule (its modules: {names})") from None
    setattr(model, FEATURES_ATTR, features)
    return model.float()


def _materialise(model: nn.Module, in_shape, what: str) -> None:
    """Initialise lazy parameters with one forward pass in eval mode (no BatchNorm update)."""
    try:
        with torch.no_grad():
            model.eval()(torch.zeros((2, *in_shape)))
    except Exception as e:
        raise ModelError(
            f"{what}: the forward pass on inputs of shape {(2, *in_shape)} failed: {type(e).__name__}: {e}"
        ) from None
    model.train()


def forward_with_features(model: nn.Module, x: torch.Tensor):
    """(features, logits): the built-in models' own method, or a hook on a user's feature module
    (flattened), or the logits twice when the user named none."""
    if hasattr(model, "forward_with_features"):
        return model.forward_with_features(x)
    name = getattr(model, FEATURES_ATTR, "")
    if not name:
        z = model(x)
        return z, z
    captured = []
    hook = model.get_submodule(name).register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        z = model(x)
    finally:
        hook.remove()
    if not captured or not isinstance(captured[-1], torch.Tensor):
        raise ModelError(f"features module {name!r} did not return one tensor in the forward pass")
    return captured[-1].flatten(1), z


def training_draws(model: nn.Module, dropout_seed: int, step: int, device):
    """Context for one training forward pass: a user model's remaining global-RNG draws come
    from (dropout seed, step) alone; a built-in model draws nothing from the global RNG."""
    if not hasattr(model, FEATURES_ATTR):
        return contextlib.nullcontext()
    return seeded_global_rng(derive_seed(dropout_seed, GLOBAL_RNG_KEY, int(step), 0), device)


def check_model(spec: dict, in_shape, num_classes: int, name: str, conditions=(), bitflip_tensor=None, examples=None):
    """Every check a user model can fail, on a batch of 2 inputs (``examples``: 2 examples of the
    data set; default zeros); returns a summary."""
    from nondet.training.bitflip import flip_candidates

    what = f"model {name} ({spec['arch']})"
    model = build_user_model(spec, in_shape, num_classes, 0, name)
    x = torch.zeros((2, *in_shape)) if examples is None else examples[:2].float().cpu()
    model.eval()
    try:
        with torch.no_grad():
            features, logits = forward_with_features(model, x)
    except ModelError as e:
        raise ModelError(f"{what}: {e}") from None
    except Exception as e:
        raise ModelError(
            f"{what}: the forward pass on inputs of shape {tuple(x.shape)} failed: {type(e).__name__}: {e}"
        ) from None
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (2, num_classes):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelError(
            f"{what}: forward returned {shape} for a batch of 2; expected logits of shape "
            f"(batch, num_classes) = (2, {num_classes})"
        )
    for part, value in (("logits", logits), ("features", features)):
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            raise ModelError(
                f"{what}: forward returned NaN/inf {part} for 2 examples of the data set (before "
                "any training): every replica would be wasted; check the model's initialisation "
                "and forward (divisions, logs, square roots)"
            )
    n_dropout = sum(isinstance(m, SeededDropout) and m.p > 0 for m in model.modules())
    if "dropout" in conditions and n_dropout == 0:
        raise ModelError(f"{what}: condition 'dropout' needs an nn.Dropout with p > 0 in the model; it has none")
    try:
        candidates = flip_candidates(model, bitflip_tensor)
    except ValueError as e:
        raise ModelError(f"{what}: {e}") from None
    if not candidates:
        raise ModelError(f"{what}: no conv/linear weight for the one-ulp flip; set bitflip_tensor")
    other = sorted({type(m).__name__ for m in model.modules() if _stochastic(m)})
    return {
        "model": name,
        "arch": spec["arch"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "dropout_layers": n_dropout,
        "other_stochastic_layers": other,
        "features": spec.get("features") or None,
        "feature_dim": int(features.shape[1]) if features.dim() > 1 else 1,
        "cka_on": "features" if spec.get("features") else "logits",
    }


def _stochastic(m: nn.Module) -> bool:
    kinds = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.RReLU)
    return isinstance(m, kinds)
