"""nondet.methods: mitigation method names parsed once, their path tags and prediction paths."""

import re
import subprocess
import sys

import pytest

from nondet.methods import BASES, Method, MethodError, predictions_path
from nondet.workflow import config as cfg
from nondet.workflow import plan

NAMES = [
    "plain",
    "tta",
    "snapshot",
    "snapshot+tta",
    "tta:flip",
    "tta:flip-crop25",
    "snapshot+tta:crop81",
    "tta:s_1",
    "snapshot+tta:a_b-c",
]


@pytest.mark.parametrize("name", NAMES)
def test_name_and_tag_round_trip(name):
    m = Method.parse(name)
    assert m.name == str(m) == name
    assert Method.parse(m) is m
    assert Method.from_tag(m.tag) == m
    assert m.tag == name.replace("+", "_").replace(":", "_")
    assert m.trained_run == ("snapshot" if name.startswith("snapshot") else "plain")


def test_fields_and_order():
    assert Method.parse("snapshot+tta:crop25") == Method(snapshot=True, tta=True, spec="crop25")
    assert Method.parse("tta") == Method(tta=True) and Method.parse("plain") == Method()
    assert Method.parse("snapshot").tta is False and Method.parse("tta:flip").snapshot is False
    assert [Method.parse(b).rank for b in BASES] == [0, 1, 2, 3]
    assert Method.parse("tta:zzz").rank == Method.parse("tta").rank
    assert Method.from_tag("snapshot_tta") == Method(snapshot=True, tta=True)
    assert Method.from_tag("tta_snapshot") == Method(tta=True, spec="snapshot")  # a spec named snapshot


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "TTA",
        "ensemble",
        "snapshot:flip",
        "plain:x",
        "tta:",
        "tta:a:b",
        "tta+snapshot",
        "snapshot+tta:-x",
        "tta:a b",
    ],
)
def test_bad_names_fail_naming_the_method_and_the_valid_ones(bad):
    with pytest.raises(
        MethodError, match=re.escape(f"unknown mitigation method {bad!r}; valid: plain, tta, snapshot,")
    ):
        Method.parse(bad)


def test_bad_tags_and_fields_fail():
    with pytest.raises(MethodError, match="'snap'"):
        Method.from_tag("snap")
    with pytest.raises(MethodError, match="'tta:x'; valid: tta:y"):
        Method.from_tag("tta_x", ["tta:y"])
    with pytest.raises(MethodError):
        Method(snapshot=True, spec="flip")  # a spec without TTA
    with pytest.raises(MethodError):
        Method(tta=True, spec="a:b")


def test_parse_against_a_configs_methods():
    base = {
        "models": {"m": {"arch": "cnn1d", "conditions": ["all"]}},
        "mitigation": {"models": ["m"], "tta": ["flip", {"name": "s1", "kind": "shift", "size": 1}]},
    }
    c = cfg.validate(base)
    valid = plan.budget_methods(c)
    assert Method.parse("snapshot+tta:s1", valid) == Method(True, True, "s1")
    with pytest.raises(
        MethodError, match=r"'tta:crop25'; valid: plain, tta:flip, tta:s1, snapshot, snapshot\+tta:flip"
    ):
        Method.parse("tta:crop25", valid)
    with pytest.raises(MethodError, match="'tta'; valid: plain, tta:flip"):
        plan.tta_spec(c, "tta")  # a list of specs: the method names one
    with pytest.raises(MethodError, match="'tta:nope'"):
        plan.tta_spec(c, "tta:nope")
    with pytest.raises(MethodError, match="'bogus'"):
        plan.trained_run("bogus")


def test_predictions_paths():
    assert predictions_path() == "results/predict/{model}/{condition}/chunk{chunk}.h5"
    assert predictions_path("{method}") == "results/mitigation/predict/{model}/{condition}/{method}/chunk{chunk}.h5"
    assert (
        predictions_path("{method}", epochs="{epochs}")
        == "results/budget/{model}/{condition}/e{epochs}/predict/{method}/chunk{chunk}.h5"
    )
    assert predictions_path("snapshot+tta:flip", "cnn", "all", 3) == (
        "results/mitigation/predict/cnn/all/snapshot_tta_flip/chunk3.h5"
    )
    assert predictions_path("plain", "cnn", "all", 0, epochs=15) == "results/budget/cnn/all/e15/predict/plain/chunk0.h5"
    with pytest.raises(MethodError):
        predictions_path("tta+x")


@pytest.mark.slow
def test_methods_module_imports_nothing_heavy():
    code = "import sys, nondet.methods; print(sorted(m for m in sys.modules if m.startswith('nondet')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['nondet', 'nondet.methods']"
    code = "import sys, nondet.methods; assert not {'torch', 'numpy', 'pandas'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
