"""Mitigation methods, parsed once: the names in configs and tables (plain, tta, snapshot,
snapshot+tta; with a list of named TTA specs tta:<name> and snapshot+tta:<name>), their tags in
file paths (+ and : become _) and where their predictions lie. Standard library only: the
Snakefile imports it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

#: The methods without a TTA spec name, in table order.
BASES = ("plain", "tta", "snapshot", "snapshot+tta")

#: A TTA spec name (config.schema.yaml, $defs/tta_spec/name).
_SPEC = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")

_FORMS = "plain, tta, snapshot, snapshot+tta, tta:<name>, snapshot+tta:<name> (<name>: a spec of mitigation.tta)"


class MethodError(ValueError):
    """An unknown or malformed mitigation method name."""


@dataclass(frozen=True)
class Method:
    """A mitigation method: predict with the snapshots of a cyclic run (``snapshot``) and/or
    average over TTA views (``tta``), those of the spec named ``spec`` in a list of specs (None:
    the one spec of mitigation.tta)."""

    snapshot: bool = False
    tta: bool = False
    spec: str | None = None

    def __post_init__(self):
        if self.spec is not None and not (self.tta and _SPEC.fullmatch(self.spec)):
            raise MethodError(f"bad TTA spec name {self.spec!r} for a method (tta={self.tta}); valid: {_FORMS}")

    @classmethod
    def parse(cls, name: str | Method, valid: Iterable[str | Method] | None = None) -> Method:
        """The method named ``name``; ``valid``: the methods allowed here (e.g. a config's)."""
        if isinstance(name, Method):
            method = name
        else:
            base, colon, spec = str(name).partition(":")
            if base not in BASES or (colon and not (base.endswith("tta") and _SPEC.fullmatch(spec))):
                raise MethodError(f"unknown mitigation method {name!r}; valid: {_valid_text(valid)}")
            method = cls(snapshot=base.startswith("snapshot"), tta=base.endswith("tta"), spec=spec or None)
        if valid is not None and method.name not in {cls.parse(v).name for v in valid}:
            raise MethodError(f"unknown mitigation method {method.name!r}; valid: {_valid_text(valid)}")
        return method

    @classmethod
    def from_tag(cls, tag: str, valid: Iterable[str | Method] | None = None) -> Method:
        """The method whose file path tag is ``tag`` (:attr:`tag`)."""
        for prefix, base in (("snapshot_tta", "snapshot+tta"), ("tta", "tta")):
            if tag == prefix or tag.startswith(prefix + "_"):
                name = base + (":" + tag[len(prefix) + 1 :] if tag != prefix else "")
                break
        else:
            if tag not in ("plain", "snapshot"):
                tags = ", ".join(cls.parse(v).tag for v in valid) if valid is not None else f"tags of {_FORMS}"
                raise MethodError(f"unknown mitigation method tag {tag!r}; valid: {tags}")
            name = tag
        return cls.parse(name, valid)

    @property
    def base(self) -> str:
        """plain, tta, snapshot or snapshot+tta: the name without its spec."""
        return "+".join(["snapshot"] * self.snapshot + ["tta"] * self.tta) or "plain"

    @property
    def name(self) -> str:
        """The canonical name, as in configs, tables and prediction files."""
        return self.base + (f":{self.spec}" if self.spec else "")

    @property
    def tag(self) -> str:
        """The name in file paths: tta_<name>, snapshot_tta_<name>, ..."""
        return self.name.replace("+", "_").replace(":", "_")

    @property
    def rank(self) -> int:
        """Table order: plain, tta, snapshot, snapshot+tta (specs of one base: as given)."""
        return BASES.index(self.base)

    @property
    def trained_run(self) -> str:
        """The training run it predicts with: snapshot (the cyclic run) or plain (the protocol's)."""
        return "snapshot" if self.snapshot else "plain"

    def __str__(self) -> str:
        return self.name


def _valid_text(valid) -> str:
    return _FORMS if valid is None else ", ".join(Method.parse(v).name for v in valid)


def predictions_path(
    method: str | Method = "plain", model="{model}", condition="{condition}", chunk="{chunk}", epochs=None
) -> str:
    """Where the predictions of ``method`` lie: results/predict/ (plain), results/mitigation/
    predict/ (the others), or results/budget/ (``epochs``: the budget study, plain included).
    Arguments left at their defaults, and the method ``{method}``, stay Snakemake wildcards."""
    tag = method if method == "{method}" else Method.parse(method).tag
    if epochs is not None:
        return f"results/budget/{model}/{condition}/e{epochs}/predict/{tag}/chunk{chunk}.h5"
    if tag == "plain":
        return f"results/predict/{model}/{condition}/chunk{chunk}.h5"
    return f"results/mitigation/predict/{model}/{condition}/{tag}/chunk{chunk}.h5"


#: The authors' TTA sets (their evaluate.py): name -> spec. Their counts of augmented views,
#: excluding the original, are 1 / 25 / 81 / 50 / 162; they average the original's logits with
#: them (``original: extra``), so 2 / 26 / 82 / 51 / 163 passes, the crop sets' centre crop
#: repeating the original.
TTA_PRESETS = {
    "flip": {"kind": "flip", "size": 4, "stride": 1, "original": "extra"},
    "crop25": {"kind": "crops", "size": 4, "stride": 2, "original": "extra"},
    "crop81": {"kind": "crops", "size": 4, "stride": 1, "original": "extra"},
    "flip-crop25": {"kind": "flip+crops", "size": 4, "stride": 2, "original": "extra"},
    "flip-crop81": {"kind": "flip+crops", "size": 4, "stride": 1, "original": "extra"},
}
