"""The determinism audit's verdict on a researcher's script, and for ``train:`` scripts (run in
this process) the probes that name which global generator a run drew from.

:func:`judge` reads the logits of the audit's runs (control twice, each source alone, init and
shuffle swapped) and gives, per source, ``honoured`` / ``ignored`` / ``cannot tell (why)`` with the
problems found. When control is not repeatable, :func:`diagnose` reruns a ``train:`` script with
every global generator at a fixed state, then with one of them at another state: the ones whose
state moves the logits are the cause, each named with the ``ctx`` call that fixes it; hooks on
torch's samplers, DataLoaders, ``nn.init`` and ``F.dropout`` say which use of torch's global
generator it was. :func:`seeding_calls` records a script's own calls that seed a global generator.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from nondet.seeds import SOURCES
from nondet.training import sources as sources_mod

#: What each global generator's use looks like, and the ctx call that replaces it.
FIXES = {
    "python random": (
        "python's global `random` (e.g. random.random() in an augmentation): draw it inside "
        "ctx.augmented(dataset, transform) or `with ctx.augment_rng(epoch, index):`, which seed "
        "random too, or from random.Random(ctx.seed('augment'))"
    ),
    "numpy global": (
        "numpy's global RNG (np.random.*, e.g. mixup's np.random.beta): draw it inside "
        "`with ctx.step_rng(step):` (per step) or ctx.augmented (per example), or from "
        "np.random.default_rng(ctx.seed(source))"
    ),
    "torch CUDA global": (
        "torch's global CUDA RNG (dropout or torch.rand* on the GPU): build the model inside "
        "`with ctx.init():`, use ctx.dropout(model, n) or wrap the step in `with ctx.step_rng(step):`"
    ),
}
TORCH_USES = {
    "sampler": (
        "a DataLoader(shuffle=True) / RandomSampler without a generator draws the order from "
        "torch's global RNG: pass sampler=ctx.sampler(len(dataset)) instead"
    ),
    "workers": (
        "a DataLoader with {n} workers and no generator seeds its workers from torch's global RNG, "
        "so what a worker draws (augmentations) moves with it: wrap the dataset in "
        "ctx.augmented(dataset, transform)"
    ),
    "init": (
        "weights were initialised (nn.init) outside `with ctx.init():`, from torch's global RNG: "
        "build the model inside `with ctx.init():`"
    ),
    "dropout": (
        "dropout (nn.Dropout / F.dropout) drew its masks from torch's global RNG: call "
        "ctx.dropout(model, n_train) and ctx.select(epoch, index), or wrap the forward pass in "
        "`with ctx.step_rng(step):`"
    ),
    "other": (
        "something drew from torch's global CPU RNG (torch.rand*, a library): draw inside "
        "`with ctx.step_rng(step):` or from ctx.generator(source)"
    ),
}


# --- global generators -----------------------------------------------------------------------


def global_names(device) -> list[str]:
    names = ["python random", "numpy global", "torch CPU global"]
    return names + (["torch CUDA global"] if torch.device(device).type == "cuda" else [])


def set_globals(seed: int, names, device) -> None:
    """Seed the global generators ``names`` (without going through the hooked seeding calls)."""
    if "python random" in names:
        random.setstate(random.Random(seed).getstate())
    if "numpy global" in names:
        np.random.set_state(np.random.RandomState(seed).get_state())
    if "torch CPU global" in names:
        torch.default_generator.manual_seed(seed)
    if "torch CUDA global" in names:
        torch.cuda.default_generators[torch.device(device).index or 0].manual_seed(seed)


# --- hooks ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _patched(owner, name, wrap):
    original = getattr(owner, name)
    setattr(owner, name, wrap(original))
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def torch_uses(seen: dict):
    """Record the uses of torch's global generator outside the ctx blocks: ``seen`` gets keys of
    TORCH_USES (``workers`` -> the number of workers)."""
    unseeded = lambda: sources_mod.SEEDED["depth"] == 0  # noqa: E731

    def sampler_iter(orig):
        def it(self):
            if self.generator is None:
                seen["sampler"] = True
            return orig(self)

        return it

    def loader_iter(orig):
        def it(self):
            if self.num_workers > 0 and self.generator is None:
                seen["workers"] = self.num_workers
            return orig(self)

        return it

    def init_fn(orig):
        def f(*args, **kwargs):
            if kwargs.get("generator") is None and unseeded():
                seen["init"] = True
            return orig(*args, **kwargs)

        return f

    def dropout_fn(orig):
        def f(input, p=0.5, training=True, inplace=False):
            if training and p > 0 and unseeded():
                seen["dropout"] = True
            return orig(input, p, training, inplace)

        return f

    inits = [n for n in ("uniform_", "normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
                         "xavier_normal_", "trunc_normal_", "orthogonal_") if hasattr(torch.nn.init, n)]  # fmt: skip
    with contextlib.ExitStack() as stack:
        stack.enter_context(_patched(torch.utils.data.RandomSampler, "__iter__", sampler_iter))
        stack.enter_context(_patched(torch.utils.data.DataLoader, "__iter__", loader_iter))
        for n in inits:
            stack.enter_context(_patched(torch.nn.init, n, init_fn))
        stack.enter_context(_patched(torch.nn.functional, "dropout", dropout_fn))
        yield seen


@contextlib.contextmanager
def seeding_calls(calls: list):
    """Record a script's calls that seed a global generator: (what, seed) into ``calls``
    (Lightning's seed_everything goes through these)."""

    def rec(what):
        def wrap(orig):
            def f(seed=None, *args, **kwargs):
                calls.append((what, seed))
                return orig(seed, *args, **kwargs)

            return f

        return wrap

    with contextlib.ExitStack() as stack:
        stack.enter_context(_patched(torch, "manual_seed", rec("torch.manual_seed")))
        stack.enter_context(_patched(random, "seed", rec("random.seed")))
        stack.enter_context(_patched(np.random, "seed", rec("np.random.seed")))
        yield calls


def name_seeding(calls: list, seeds) -> list[str]:
    """Sentences for the global seedings a script did: from which source's seed, or a constant."""
    by_value = {}
    for s in SOURCES:  # every source, so a new one is named too
        v = getattr(seeds, s)
        if v is not None:
            by_value.setdefault(int(v), s)
            by_value.setdefault(int(v) % sources_mod.SEED_RANGE, s)
    out = []
    for what, value in dict.fromkeys(calls):
        try:
            source = by_value.get(int(value))
        except (TypeError, ValueError):
            source = None
        if source:
            out.append(
                f"your script seeds a global generator from the `{source}` seed ({what}): every draw from "
                f"it (order, dropout, augmentation, workers) moves with `{source}`, so one seed drives "
                "several sources; hand each its own (ctx.init(), ctx.sampler, ctx.augmented, ctx.dropout)"
            )
        else:
            out.append(
                f"your script seeds a global generator with a value that is no source's seed ({what}({value})): "
                "what draws from it never varies with any source"
            )
    return out


# --- the verdict --------------------------------------------------------------------------------


def judge(outputs: dict, sources, device_type: str) -> dict:
    """The audit's verdict from each run's logits: repeatable, and which seeds change them."""
    same = lambda a, b: np.array_equal(a, b)  # noqa: E731
    control = outputs["control"]
    repeatable = same(control, outputs["control again"])
    report = {"repeatable": repeatable, "sources": {}, "problems": [], "notes": [], "causes": []}
    if not repeatable:
        diff = float(np.max(np.abs(control - outputs["control again"])))
        report["problems"].append(
            "control replicas differ: two runs with identical seeds gave different test logits (max "
            f"|difference| {diff:.3g}); something in your script draws from a global RNG (torch, numpy, "
            "random, DataLoader worker seeds) or runs a nondeterministic kernel"
        )
    for s in sources:
        changed = not same(control, outputs[s])
        if not repeatable:
            report["sources"][s] = "cannot tell (control is not repeatable)"
        elif changed:
            report["sources"][s] = "honoured"
        elif s == "kernels" and device_type == "cpu":
            report["sources"][s] = "cannot tell (a CPU has no nondeterministic kernels)"
            report["notes"].append(
                "kernels: a CPU has no nondeterministic kernels; the labelled stand-in needs ctx.sampler(n, batch_size)"
            )
        elif s == "bitflip":
            report["sources"][s] = "ignored"
            report["problems"].append(
                "your script ignores the `bitflip` seed (or rounding absorbed the one-ulp flip): call "
                "ctx.flip(model) right after building the model"
            )
        else:
            report["sources"][s] = "ignored"
            report["problems"].append(
                f"your script ignores the `{s}` seed: varying it alone left the test logits bitwise unchanged"
            )
    swapped = outputs.get("init and shuffle swapped")
    if repeatable and swapped is not None and same(control, swapped):
        for s in ("init", "shuffle"):
            report["sources"][s] = "cannot tell (one seed drives both init and shuffle)"
        report["problems"].append(
            "init and shuffle seeds swapped gave bitwise the same test logits: your script combines the "
            "two seeds into one (e.g. seed_everything(init + shuffle)), so neither varies alone; use "
            "ctx.init() for the weights and ctx.sampler(n) for the order (or seeds['init'] / seeds['shuffle'] apart)"
        )
    return report


def causes(depends: dict, uses: dict) -> list[str]:
    """Sentences naming each global generator the logits depend on, with the ctx call that fixes it."""
    out = []
    for name, moved in depends.items():
        if not moved:
            continue
        if name == "torch CPU global":
            found = [k for k in ("sampler", "workers", "init", "dropout") if k in uses] or ["other"]
            out += [f"torch's global CPU RNG: {TORCH_USES[k].format(n=uses.get('workers'))}" for k in found]
        else:
            out.append(FIXES[name])
    return out
