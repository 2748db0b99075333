"""Job params as the HTML report shows them (nondet.workflow.shown): a short sentence in the
report, the same dict for Snakemake's rerun tracking and for the rule's script."""

import json
import pickle

from snakemake.logging import format_dict

from nondet.workflow import shown

EXPECT = {
    "results/metrics/cnn/control.h5": {"spec_hash": "a330c9486e3ed062", "data_hash": "9aa8", "code_version": "3"},
    "results/metrics/cnn/init.h5": {"spec_hash": "80e3097f18045495", "data_hash": "9aa8", "code_version": "3"},
}


def test_the_report_shows_a_sentence_and_no_hashes():
    text = format_dict({"code": "b8b2", "expect": shown.expectations(EXPECT)})  # what --report prints
    assert (
        text == "code=b8b2, expect=the spec, data and code hashes each of its 2 inputs must carry (checked when read)"
    )
    one = format_dict({"expect": shown.expectations(EXPECT["results/metrics/cnn/init.h5"])})
    assert "spec_hash" not in one and "its input must carry" in one


def test_rerun_tracking_sees_the_same_value():
    # Snakemake records repr(param) (persistence._serialize_param_builtin): unchanged by wrapping
    wrapped = shown.expectations(EXPECT)
    assert repr(wrapped) == repr(EXPECT) and wrapped == EXPECT
    config = {"experiment": "x", "replicas": 8, "models": {"cnn": {"arch": "cnn"}}}
    assert repr(shown.whole_config(config)) == repr(config)
    assert json.dumps(shown.whole_config(config)) == json.dumps(config)


def test_a_script_unpickles_a_plain_dict():
    # the preamble of a rule's script unpickles params before the repository is importable there
    back = pickle.loads(pickle.dumps(shown.brief({"alpha": 0.05, "inputs": EXPECT}, "comparison"), protocol=4))
    assert type(back) is dict and back == {"alpha": 0.05, "inputs": EXPECT}
    assert b"nondet" not in pickle.dumps(shown.expectations(EXPECT), protocol=4)


def test_brief_names_the_long_entries_and_shows_the_short_ones():
    text = str(shown.brief({"name": "lr", "alpha": 0.05, "effect": {"accuracy": 1.0}, "inputs": EXPECT}, "comparison"))
    assert text == "comparison: name=lr, alpha=0.05 (and effect, inputs)"
