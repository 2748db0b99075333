"""The diversity table: one row per (model, condition), as CSV and Markdown."""

from __future__ import annotations

import pandas as pd

from .h5io import atomic_path
from .seeds import CONDITIONS

#: Columns promised by the README, in order; more follow them.
COLUMNS = [
    "model", "condition", "device", "n_replicas", "acc_mean", "acc_sd", "acc_sd_se",
    "ce_mean", "ce_sd", "ce_sd_se", "disagreement", "disagreement_se", "pearson", "spearman",
    "ens_acc_gain", "ens_ce_gain", "cka",
]  # fmt: skip


def diversity_table(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    order = {c: i for i, c in enumerate(CONDITIONS)}
    df["_order"] = df["condition"].map(order)
    df = df.sort_values(["model", "_order"]).drop(columns="_order").reset_index(drop=True)
    rest = [c for c in df.columns if c not in COLUMNS]
    return df[COLUMNS + rest]


def write_table(df: pd.DataFrame, csv_path, md_path=None, digits: int = 4) -> None:
    with atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False)
    if md_path:
        with atomic_path(md_path) as tmp:
            with open(tmp, "w") as f:
                f.write(df.to_markdown(index=False, floatfmt=f".{digits}g") + "\n")


METHODS = ["plain", "tta", "snapshot", "snapshot+tta"]

MITIGATION_COLUMNS = [
    "model", "condition", "method", "n_replicas", "acc_mean", "acc_sd", "acc_sd_se", "ce_mean",
    "ce_sd", "ce_sd_se", "disagreement", "disagreement_se", "pearson", "pearson_se", "epochs",
    "cycles", "test_passes", "acc_sd_reduction", "ce_sd_reduction", "disagreement_reduction",
]  # fmt: skip


def mitigation_table(rows: list[dict]) -> pd.DataFrame:
    """One row per (model, condition, method); ``*_reduction`` = % reduction against plain."""
    df = pd.DataFrame(rows)
    df["_m"] = df["method"].map({m: i for i, m in enumerate(METHODS)})
    df = df.sort_values(["model", "condition", "_m"]).drop(columns="_m").reset_index(drop=True)
    for metric in ("acc_sd", "ce_sd", "disagreement"):
        plain = df[df["method"] == "plain"].set_index(["model", "condition"])[metric]
        ref = df.set_index(["model", "condition"]).index.map(plain.get)
        df[f"{metric}_reduction"] = 100.0 * (1.0 - df[metric] / ref.astype(float))
    return df[MITIGATION_COLUMNS]
