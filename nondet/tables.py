"""The diversity table: one row per (model, condition), as CSV and Markdown."""

from __future__ import annotations

import pandas as pd

from .h5io import atomic_path
from .seeds import CONDITIONS

#: Columns promised by the README, in order; more follow them.
COLUMNS = [
    "model", "condition", "device", "n_replicas", "acc_mean", "acc_sd", "acc_sd_se",
    "ce_mean", "ce_sd", "ce_sd_se", "disagreement", "disagreement_se", "pearson", "spearman",
    "ens_acc_gain", "ens_ce_gain", "cka", "n_absorbed",
]  # fmt: skip


def diversity_table(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    order = {c: i for i, c in enumerate(CONDITIONS)}
    df["_order"] = df["condition"].map(order)
    df = df.sort_values(["model", "_order"]).drop(columns="_order").reset_index(drop=True)
    if "n_absorbed" not in df:
        df["n_absorbed"] = float("nan")
    rest = [c for c in df.columns if c not in COLUMNS]
    return df[COLUMNS + rest]


def absorbed_notes(df: pd.DataFrame) -> list[str]:
    """One line per row whose one-ulp flips were checked: how many were absorbed."""
    lines = []
    for _, row in df[df["n_absorbed"].notna()].iterrows():
        n = int(row["n_replicas"])
        k = int(row["n_absorbed"])
        what = "they add no diversity" if k else "every flip changed the trained model"
        lines.append(
            f"{row['model']}/{row['condition']}: {k} of {n} one-ulp flips absorbed (final weights "
            f"bitwise equal to the unperturbed run with the same seeds); {what}."
        )
    return lines


def write_table(df: pd.DataFrame, csv_path, md_path=None, digits: int = 4, notes=()) -> None:
    with atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False)
    if md_path:
        with atomic_path(md_path) as tmp:
            with open(tmp, "w") as f:
                f.write(df.to_markdown(index=False, floatfmt=f".{digits}g") + "\n")
                for line in notes:
                    f.write(f"\n{line}\n")


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
