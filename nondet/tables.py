"""The diversity table: one row per (model, condition), as CSV and Markdown."""

from __future__ import annotations

import pandas as pd

from .h5io import atomic_path
from .seeds import CONDITIONS

#: Columns promised by the README, in order; more follow them.
COLUMNS = [
    "model", "condition", "device", "n_replicas", "acc_mean", "acc_sd", "acc_sd_se",
    "ce_mean", "ce_sd", "ce_sd_se", "disagreement", "disagreement_se", "pearson", "spearman",
    "ens_acc_gain", "ens_ce_gain", "cka", "n_absorbed", "n_identical_pairs",
]  # fmt: skip


def diversity_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    order = {c: i for i, c in enumerate(CONDITIONS)}
    # config-defined conditions and imported runs: after the built-ins, in the order given
    df["_order"] = df["condition"].map(order).fillna(len(order))
    df = df.sort_values(["model", "_order"], kind="stable").drop(columns="_order").reset_index(drop=True)
    for column in ("n_absorbed", "n_identical_pairs"):
        if column not in df:
            df[column] = float("nan")
    rest = [c for c in df.columns if c not in COLUMNS]
    return df[COLUMNS + rest]


def table_notes(df: pd.DataFrame) -> list[str]:
    """Lines to print under a diversity table: how many one-ulp flips were absorbed, and any row
    where the protocol's expectation about bitwise-identical replicas does not hold."""
    lines = []
    for _, row in df.iterrows():
        n = int(row["n_replicas"])
        if pd.notna(row.get("n_absorbed")):
            k = int(row["n_absorbed"])
            what = "they add no diversity" if k else "every flip changed the trained model"
            lines.append(
                f"{row['model']}/{row['condition']}: {k} of {n} one-ulp flips absorbed (final "
                f"weights bitwise equal to the unperturbed run with the same seeds); {what}."
            )
        if pd.isna(row.get("n_identical_pairs")):
            continue
        same, pairs = int(row["n_identical_pairs"]), n * (n - 1) // 2
        if row["condition"] == "control" and same != pairs:
            lines.append(
                f"WARNING {row['model']}/control: only {same} of {pairs} pairs of replicas are "
                "bitwise identical; deterministic training did not repeat itself on this setup."
            )
        elif row["condition"] != "control" and same:
            lines.append(
                f"WARNING {row['model']}/{row['condition']}: {same} of {pairs} pairs of replicas "
                "have bitwise identical test logits; this source produced no diversity between "
                "them on this device."
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
    # tta:<name> and snapshot+tta:<name> (a list of TTA specs) rank as their method, in given order
    df["_m"] = df["method"].map(lambda m: METHODS.index(m.partition(":")[0]))
    df = df.sort_values(["model", "condition", "_m"], kind="stable").drop(columns="_m")
    df = df.reset_index(drop=True)
    for metric in ("acc_sd", "ce_sd", "disagreement"):
        plain = df[df["method"] == "plain"].set_index(["model", "condition"])[metric]
        ref = df.set_index(["model", "condition"]).index.map(plain.get)
        df[f"{metric}_reduction"] = 100.0 * (1.0 - df[metric] / ref.astype(float))
    return df[MITIGATION_COLUMNS]
