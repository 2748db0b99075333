"""Several TTA specs in one mitigation study: the authors' sets, their view counts,
the methods and table rows they make."""

import pandas as pd
import pytest
import torch

from nondet.analysis.tables import mitigation_table
from nondet.training.tta import PRESETS, make_views, predict_tta
from nondet.workflow import config as cfg
from nondet.workflow import plan_methods

# The paper's counts of augmented views (the authors' evaluate.py aug_rep_factor), EXCLUDING the
# original; their TTA averages the original's logits with them (one more pass).
PAPER_VIEWS = {"flip": 1, "crop25": 25, "crop81": 81, "flip-crop25": 50, "flip-crop81": 162}


@pytest.mark.parametrize("name", list(PAPER_VIEWS))
def test_each_preset_gives_the_papers_number_of_views(name):
    views = make_views(PRESETS[name])
    assert views[0][0] == "identity"
    assert len(views) - 1 == PAPER_VIEWS[name]  # augmented views, excluding the original
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    outs = [v(x) for _, v in views[1:]]
    distinct = {tuple(o.flatten().tolist()) for o in outs}
    assert len(distinct) == PAPER_VIEWS[name]  # all different images
    flipped = x.flip(3)
    assert any(torch.equal(o, flipped) for o in outs) == ("flip" in name)
    # the crop sets contain the centre crop, i.e. the original a second time (as the authors')
    assert any(torch.equal(o, x) for o in outs) == (name != "flip")


def test_once_counts_the_original_once():
    spec = {**PRESETS["crop25"], "original": "once"}
    assert len(make_views(spec)) == 25  # the centre crop is the identity
    assert len(make_views({**PRESETS["flip-crop81"], "original": "once"})) == 162


def test_list_of_specs_methods_and_validation():
    base = {
        "models": {"m": {"arch": "cnn1d", "conditions": ["all"]}},
        "mitigation": {"models": ["m"], "tta": ["crop25", {"name": "s1", "kind": "shift", "size": 1}]},
    }
    c = cfg.validate(base)
    methods = plan_methods.mitigation_methods(c)
    assert methods == {
        "tta:crop25": "tta_crop25",
        "tta:s1": "tta_s1",
        "snapshot": "snapshot",
        "snapshot+tta:crop25": "snapshot_tta_crop25",
        "snapshot+tta:s1": "snapshot_tta_s1",
        "ema": "ema",
        "ema+tta:crop25": "ema_tta_crop25",
        "ema+tta:s1": "ema_tta_s1",
        "swa": "swa",
        "swa+tta:crop25": "swa_tta_crop25",
        "swa+tta:s1": "swa_tta_s1",
    }
    assert plan_methods.tta_spec(c, "tta:s1") == {"kind": "shift", "size": 1}
    assert plan_methods.tta_spec(c, "snapshot") is None
    single = cfg.validate({"models": base["models"], "mitigation": {"models": ["m"]}})
    # the one-spec form: the registry's names for the default methods (a built-in method need
    # not be a default one)
    every = plan_methods.mitigation_methods()
    chosen = {"tta", *single["mitigation"]["methods"]}
    assert plan_methods.mitigation_methods(single) == {k: v for k, v in every.items() if k.split("+")[0] in chosen}
    assert plan_methods.mitigation_methods(single)["snapshot+tta"] == "snapshot_tta"
    assert plan_methods.tta_spec(single, "snapshot+tta") == single["mitigation"]["tta"]
    with pytest.raises(cfg.ConfigError, match="mitigation.tta"):
        cfg.validate({**base, "mitigation": {"models": ["m"], "tta": ["crop9"]}})
    with pytest.raises(cfg.ConfigError, match="two specs are named 'crop25'"):
        cfg.validate(
            {**base, "mitigation": {"models": ["m"], "tta": ["crop25", {"name": "crop25", "kind": "crops", "size": 1}]}}
        )


def test_predict_tta_averages_every_view():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    views = make_views(PRESETS["flip-crop25"])
    z, _ = predict_tta(_WithFeatures(model), x, views)
    expected = torch.stack([model(v(x)) for _, v in views]).mean(0)
    assert torch.allclose(z, expected, atol=1e-5)


class _WithFeatures(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward_with_features(self, x):
        z = self.m(x)
        return z, z

    def forward(self, x):
        return self.m(x)


def test_mitigation_table_rows_for_several_specs():
    methods = ["snapshot+tta:crop81", "tta:crop81", "snapshot", "plain", "tta:flip", "snapshot+tta:flip"]
    rows = [
        {
            "model": "m",
            "condition": "all",
            "method": m,
            "n_replicas": 4,
            "acc_mean": 90.0,
            "acc_sd": 0.2,
            "acc_sd_se": 0.01,
            "ce_mean": 0.3,
            "ce_sd": 0.01,
            "ce_sd_se": 0.001,
            "disagreement": 10.0 - i,
            "disagreement_se": 0.1,
            "pearson": 0.9,
            "pearson_se": 0.01,
            "ens_acc_gain": 1.0,
            "ens_acc_gain_se": 0.1,
            "epochs": 10,
            "cycles": 1,
            "test_passes": 1,
        }
        for i, m in enumerate(methods)
    ]
    df = mitigation_table(rows)
    assert list(df["method"]) == [
        "plain",
        "tta:crop81",
        "tta:flip",
        "snapshot",
        "snapshot+tta:crop81",
        "snapshot+tta:flip",
    ]
    plain = df.set_index("method").loc["plain", "disagreement"]
    row = df.set_index("method").loc["tta:flip"]
    assert row["disagreement_reduction"] == pytest.approx(100 * (1 - row["disagreement"] / plain))
    assert isinstance(df, pd.DataFrame)
