"""Parameter names of the built-in architectures, without torch (the Snakefile imports this).

The config check resolves every model's ``bitflip_tensor`` against these names when Snakemake
reads the config, so that no planned bitflip job can fail at its first step. Snakemake re-reads
the config in every job, so building the models with torch there would cost ~2 s per job; the
names are instead derived from the architecture's parameters here, and
``tests/test_config.py::test_parameter_names_match_the_built_models`` checks them against the
models that :func:`nondet.training.models.build_model` builds, so the two cannot drift apart.
"""

from __future__ import annotations


def _norm(prefix: str) -> list[tuple[str, bool]]:
    return [(f"{prefix}.weight", False), (f"{prefix}.bias", False)]


def _layer(prefix: str, bias: bool = True) -> list[tuple[str, bool]]:
    return [(f"{prefix}.weight", True), *([(f"{prefix}.bias", False)] if bias else [])]


def _parameters(arch: str, params: dict) -> list[tuple[str, bool]]:
    """(name, is a conv/linear weight) of every parameter, in module order."""
    if arch == "linear":
        return _layer("fc")
    if arch == "mlp":
        bn = params.get("batchnorm", True)
        return [*_layer("hidden", bias=not bn), *(_norm("bn") if bn else []), *_layer("fc")]
    if arch == "cnn1d":
        out = []
        for i, _ in enumerate(params.get("kernels", (5, 3, 3))):
            out += [*_layer(f"body.{3 * i}", bias=False), *_norm(f"body.{3 * i + 1}")]
        return [*out, *_layer("fc")]
    if arch == "resnet":
        width, blocks = params.get("width", 16), params.get("blocks", 2)
        out, c_in, j = [*_layer("stem.0", bias=False), *_norm("stem.1")], width, 0
        for i, c in enumerate((width, 2 * width, 4 * width)):
            for b in range(blocks):
                p = f"stages.{j}"
                out += [*_layer(f"{p}.conv1", False), *_norm(f"{p}.bn1"), *_layer(f"{p}.conv2", False)]
                out += _norm(f"{p}.bn2")
                if (b == 0 and i > 0) or c_in != c:  # the shape changes
                    if params.get("shortcut", "conv") == "option_a":
                        out += _norm(f"{p}.shortcut.bn")
                    else:
                        out += [*_layer(f"{p}.shortcut.0", bias=False), *_norm(f"{p}.shortcut.1")]
                c_in, j = c, j + 1
        return [*out, *_layer("fc")]
    raise ValueError(
        f"built-in architecture {arch!r} has no parameter names in nondet/workflow/paramnames.py: "
        "add a branch to _parameters() there listing its parameters in module order "
        "(tests/test_config.py::test_every_built_in_architecture_has_parameter_names checks it)"
    )


def parameter_names(arch: str, params: dict) -> list[str]:
    """Names of ``model.named_parameters()`` of built-in ``arch`` with ``params``, in order."""
    return [name for name, _ in _parameters(arch, params)]


def weight_names(arch: str, params: dict) -> list[str]:
    """The conv/linear weights among them (as :func:`nondet.training.bitflip.weight_tensors`)."""
    return [name for name, weight in _parameters(arch, params) if weight]
