"""A run's tables set beside the paper's published numbers (paper/expected.csv).

Conventions differ, and ours stay in our tables; here only, our values are converted to the
paper's before the comparison:

- SD of accuracy and of cross-entropy: ours use ddof 1 (sample SD), the paper's ddof 0 (the
  authors' np.std): ours x sqrt((n - 1) / n), and the same factor on our bootstrap SE.
- ensemble gain in cross-entropy: ours = members minus ensemble (positive = better), the paper's
  delta = ensemble minus member (negative = better): sign flipped. The accuracy gain has the same
  sign in both (ensemble minus member).

``diff`` = ours (converted) - paper; ``diff_in_se`` = diff / our bootstrap SE (converted);
``z`` = diff / sqrt(our SE^2 + the paper's SE^2) where the paper gives an SE.
"""

from __future__ import annotations

import math

import pandas as pd

DDOF0 = ("acc_sd", "ce_sd")

#: The five metrics of the paper's "variability reduction" (its mitigation table, last column):
#: SD of accuracy, SD of cross-entropy, disagreement, ensemble gain in accuracy and
#: (1 - correlation), each as a relative reduction against the plain single model, averaged.
VARIABILITY_METRICS = ("acc_sd", "ce_sd", "disagreement", "ens_acc_gain", "pearson")


def variability_reduction(plain, method) -> float:
    """The paper's variability reduction (%) of ``method`` against ``plain`` (mappings with the
    five :data:`VARIABILITY_METRICS`): the mean over them of 100 * (1 - method / plain), with
    the correlation taken as 1 - correlation. Recomputes the paper's published 48 % (snapshot),
    37 % (flip-crop81 TTA) and 61 % (both) from its own table (tests/test_paper_comparison.py).
    Ratios of SDs do not depend on ddof, so our ddof-1 SDs need no conversion here; NaN where
    a plain value is 0 (a condition without variability) or missing."""
    parts = []
    for metric in VARIABILITY_METRICS:
        p, m = float(plain[metric]), float(method[metric])
        if metric == "pearson":
            p, m = 1.0 - p, 1.0 - m
        parts.append(100.0 * (1.0 - m / p) if p != 0 and math.isfinite(p) else math.nan)
    return sum(parts) / len(parts)


SIGN = ("ens_ce_gain",)


def convert(metric: str, value: float, se: float, n: int) -> tuple[float, float, str]:
    """Our ``value`` and bootstrap ``se`` of ``metric`` in the paper's convention, and a note."""
    if metric in DDOF0:
        f = math.sqrt((n - 1) / n)
        return value * f, se * f, f"ddof 1 -> 0 (x sqrt({n - 1}/{n}))"
    if metric in SIGN:
        return -value, se, "sign flipped (ensemble - member)"
    return value, se, ""


def paper_comparison(
    expected: pd.DataFrame, diversity: pd.DataFrame, mitigation: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per published number that the run has: ours (converted) beside the paper's."""
    rows = []
    for _, e in expected.iterrows():
        if e["table"] == "diversity":
            match = diversity[(diversity["model"] == e["model"]) & (diversity["condition"] == e["condition"])]
        elif e["table"] == "mitigation" and mitigation is not None:
            match = mitigation[
                (mitigation["model"] == e["model"])
                & (mitigation["condition"] == e["condition"])
                & (mitigation["method"] == e["method"])
            ]
        else:
            continue
        if match.empty or e["metric"] not in match:
            continue
        row = match.iloc[0]
        n = int(row["n_replicas"])
        se_col = f"{e['metric']}_se"
        se = float(row[se_col]) if se_col in row and pd.notna(row[se_col]) else float("nan")
        ours, ours_se, note = convert(e["metric"], float(row[e["metric"]]), se, n)
        paper_se = float(e["se"]) if pd.notna(e["se"]) else float("nan")
        diff = ours - float(e["value"])
        both = math.sqrt(ours_se**2 + paper_se**2) if not math.isnan(paper_se) else float("nan")
        rows.append(
            {
                "table": e["table"],
                "model": e["model"],
                "condition": e["condition"],
                "method": e["method"],
                "metric": e["metric"],
                "paper": float(e["value"]),
                "paper_se": paper_se,
                "ours": ours,
                "ours_se": ours_se,
                "n_replicas": n,
                "diff": diff,
                "diff_in_se": diff / ours_se if ours_se > 0 else float("nan"),
                "z": diff / both if both > 0 else float("nan"),
                "conversion": note,
                "paper_convention": e["convention"],
                "source": e["source"],
            }
        )
    columns = [
        "table",
        "model",
        "condition",
        "method",
        "metric",
        "paper",
        "paper_se",
        "ours",
        "ours_se",
        "n_replicas",
        "diff",
        "diff_in_se",
        "z",
        "conversion",
        "paper_convention",
        "source",
    ]
    return pd.DataFrame(rows, columns=columns)
