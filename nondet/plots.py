"""Figures: conditions compared on each diversity metric, with bootstrap error bars."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402

from .h5io import atomic_path  # noqa: E402

PANELS = [
    ("acc_sd", "SD of accuracy (%)"),
    ("ce_sd", "SD of cross-entropy"),
    ("disagreement", "pairwise disagreement (%)"),
    ("pearson", "logit correlation (Pearson)"),
    ("ens_acc_gain", "2-model ensemble accuracy gain (pp)"),
    ("cka", "linear CKA of features"),
]


def condition_label(row: dict) -> str:
    """Condition name, marked when the kernels source is only a CPU stand-in."""
    if row["condition"] in ("kernels", "all") and "standin" in row.get("kernels_mode", ""):
        return row["condition"] + "*"
    return row["condition"]


def diversity_figure(rows: list[dict], title: str, pdf_path, png_path) -> None:
    from .seeds import CONDITIONS

    order = list(CONDITIONS)
    rows = sorted(rows, key=lambda r: order.index(r["condition"]))
    labels = [condition_label(r) for r in rows]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), constrained_layout=True)
    for ax, (key, name) in zip(axes.flat, PANELS):
        values = [r.get(key, float("nan")) for r in rows]
        errors = [r.get(f"{key}_se", float("nan")) for r in rows]
        colors = ["0.6" if r["condition"] == "control" else
                  ("C3" if r["condition"] == "all" else "C0") for r in rows]  # fmt: skip
        ax.bar(range(len(rows)), values, yerr=errors, color=colors, capsize=3)
        ax.set_xticks(range(len(rows)), labels, rotation=45, ha="right")
        ax.set_title(name, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    n = rows[0]["n_replicas"] if rows else 0
    device = rows[0]["device"] if rows else ""
    note = "  (* kernels: CPU stand-in, within-batch permutation)" if any(
        "*" in label for label in labels
    ) else ""
    fig.suptitle(f"{title}: diversity by source, {n} replicas each, {device}{note}", fontsize=11)
    for path in (pdf_path, png_path):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120)
    plt.close(fig)
