"""The tables, as CSV and Markdown: diversity (one row per (model, condition)), mitigation,
mitigation versus training budget."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nondet.io.h5io import atomic_path
from nondet.methods import Method
from nondet.seeds import CONDITIONS

#: Columns promised by the README, in order; more follow them.
COLUMNS = [
    "model",
    "condition",
    "device",
    "n_replicas",
    "acc_mean",
    "acc_sd",
    "acc_sd_se",
    "ce_mean",
    "ce_sd",
    "ce_sd_se",
    "disagreement",
    "disagreement_se",
    "pearson",
    "spearman",
    "ens_acc_gain",
    "ens_ce_gain",
    "cka",
    "n_absorbed",
    "n_identical_pairs",
]


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


def _audit_failed(row) -> bool:
    """A script model's row trained under ``audit: warn`` after its determinism audit failed."""
    value = row.get("audit_failed")
    return isinstance(value, str) and bool(value)


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
        if _audit_failed(row):
            lines.append(
                f"WARNING {row['model']}/{row['condition']}: trained under audit: warn although its "
                f"determinism audit failed ({row['audit_failed']}); its numbers may not mean what the condition says."
            )
        if "(measured:" in str(row.get("kernels_mode", "")):
            lines.append(
                f"{row['model']}/{row['condition']}: kernels {row['kernels_mode']}; replicas that "
                "share a process share its kernel choices (cuDNN autotuning), so set "
                "replicas_per_job: 1 to train each kernels replica in its own process, as the authors did."
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


def _pm(mean, spread, digits: int) -> str:
    """``mean ± spread`` with ``digits`` decimals; empty when the mean is missing."""
    if pd.isna(mean):
        return ""
    return f"{mean:.{digits}f}" + ("" if pd.isna(spread) else f" ± {spread:.{digits}f}")


def _num(value, digits: int, sign: bool = False) -> str:
    return "" if pd.isna(value) else f"{value:{'+' if sign else ''}.{digits}f}"


#: The Markdown diversity table's columns, for a reader: header -> cell of a row.
READER_COLUMNS = {
    "model": lambda r: r["model"],
    "condition": lambda r: (
        r["condition"]
        + ("*" if "standin" in str(r.get("kernels_mode", "")) else "")
        + (" ‡" if _audit_failed(r) else "")
    ),
    "replicas": lambda r: str(int(r["n_replicas"])),
    "acc mean ± SD (%)": lambda r: _pm(r["acc_mean"], r["acc_sd"], 2),
    "CE mean ± SD": lambda r: _pm(r["ce_mean"], r["ce_sd"], 4),
    "disagreement ± SE (%)": lambda r: _pm(r["disagreement"], r.get("disagreement_se"), 2),
    "Pearson": lambda r: _num(r["pearson"], 3),
    "ensemble gain (pp)": lambda r: _num(r["ens_acc_gain"], 2, sign=True),
    "CKA": lambda r: _num(r["cka"], 3) + (" †" if r.get("cka_on") == "logits" else ""),
    "flips absorbed": lambda r: "" if pd.isna(r["n_absorbed"]) else f"{int(r['n_absorbed'])} of {int(r['n_replicas'])}",
}


DIVERSITY_LEGEND = (
    "Accuracy and cross-entropy (CE) over the test set, mean ± SD over replicas; disagreement "
    "(% of test examples whose predicted class differs), Pearson correlation of the logits, "
    "ensemble gain (2-model ensemble accuracy minus its members', percentage points) and "
    "linear CKA averaged over pairs of replicas; disagreement ± its bootstrap SE over models."
)

#: Cells the reader views below share: header -> cell of a row.
_CELLS = {
    "model": lambda r: r["model"],
    "condition": lambda r: r["condition"],
    "epochs": lambda r: str(int(r["epochs"])),
    "method": lambda r: r["method"],
    "models averaged": lambda r: str(int(r["models_averaged"])),
    "training runs": lambda r: str(int(r["train_runs"])),
    "replicas": lambda r: str(int(r["n_replicas"])),
    "test passes": lambda r: str(int(r["test_passes"])),
    "ensembles": lambda r: str(int(r["n_ensembles"])),
    "acc mean ± SD (%)": lambda r: _pm(r["acc_mean"], r["acc_sd"], 2),
    "CE mean ± SD": lambda r: _pm(r["ce_mean"], r["ce_sd"], 4),
    "disagreement ± SE (%)": lambda r: _pm(r["disagreement"], r.get("disagreement_se"), 2),
    "disagreement (%)": lambda r: _num(r["disagreement"], 2),
    "SD of acc: reduction (%)": lambda r: _num(r["acc_sd_reduction"], 1),
    "disagreement: reduction (%)": lambda r: _num(r["disagreement_reduction"], 1),
    "SD of acc vs plain (%)": lambda r: _num(r["acc_sd_vs_plain"], 1, sign=True),
    "disagreement vs plain (%)": lambda r: _num(r["disagreement_vs_plain"], 1, sign=True),
    "variability reduction (%)": lambda r: _num(r["variability_reduction"], 1),
}


def _view(headers: str) -> dict:
    """The cells of ``headers`` ("|"-separated), in that order."""
    return {h: _CELLS[h] for h in headers.split("|")}


#: The Markdown mitigation table's columns (snapshot ensembles and TTA at one training run).
MITIGATION_READER_COLUMNS = _view(
    "model|condition|method|replicas|test passes|acc mean ± SD (%)|CE mean ± SD|disagreement ± SE (%)|"
    "SD of acc: reduction (%)|disagreement: reduction (%)|variability reduction (%)"
)
MITIGATION_LEGEND = (
    "Each method's replicas against plain training of the same condition, at the same training "
    "budget (one training run per replica, same epochs; test passes = forward passes per test "
    "example). Reductions are % less than plain (negative: more variable); variability reduction "
    "is the paper's average over five metrics. snapshot: logits of each cosine cycle's final "
    "weights averaged (its own cyclic run); ema, swa: moving / last-epochs average of the "
    "weights, kept while the plain run trains (no extra run); +tta: logits also averaged over "
    "test-time augmented views."
)

#: The Markdown budget table's columns (mitigation versus training epochs).
BUDGET_READER_COLUMNS = _view(
    "model|condition|epochs|method|replicas|acc mean ± SD (%)|disagreement ± SE (%)|SD of acc vs plain (%)|"
    "disagreement vs plain (%)|variability reduction (%)"
)
BUDGET_LEGEND = (
    "Each method against plain training at the same number of epochs: % change of the SD of "
    "accuracy and of disagreement (negative: less variable than plain) and the paper's "
    "variability reduction (average over five metrics, positive: less variable)."
)

#: The Markdown ensembles table's columns (k-model ensembles beside one-run methods).
ENSEMBLE_READER_COLUMNS = _view(
    "model|condition|method|models averaged|training runs|test passes|ensembles|acc mean ± SD (%)|"
    "CE mean ± SD|disagreement (%)"
)
ENSEMBLE_LEGEND = (
    "k-model ensembles (models averaged = training runs = k) beside the one-training-run methods; "
    "mean ± SD over ensembles (or replicas), disagreement averaged over pairs of them."
)


def reader_markdown(df: pd.DataFrame, csv_name: str, columns=None, legend=(DIVERSITY_LEGEND,)) -> str:
    """A table as the few columns a person reads (``columns``: header -> cell of a row; the
    diversity table's by default), with the legend of its marks; ``csv_name`` (beside it) keeps
    every column."""
    columns = READER_COLUMNS if columns is None else columns
    rows = [{h: cell(r) for h, cell in columns.items()} for r in df.to_dict("records")]
    text = pd.DataFrame(rows, columns=list(columns)).to_markdown(index=False, disable_numparse=True)
    legend = list(legend)
    if "kernels_mode" in df and df["kernels_mode"].astype(str).str.contains("standin").any():
        legend.append("* kernels: a CPU stand-in for nondeterministic kernels (examples permuted within each batch).")
    if "audit_failed" in df and df.apply(_audit_failed, axis=1).any():
        legend.append(
            "‡ a script model trained under audit: warn although its determinism audit failed (see the notes)."
        )
    if columns is READER_COLUMNS and "cka_on" in df and (df["cka_on"] == "logits").any():
        legend.append("† CKA computed on the logits (no penultimate features for this model).")
    devices = ", ".join(sorted(df["device"].astype(str).unique())) if "device" in df else ""
    if columns is READER_COLUMNS:
        legend.append(
            f"Device: {devices}. Every column ({len(df.columns)}: bootstrap SEs, Spearman, the cross-entropy "
            f"gain, the noise decomposition of acc_var, kernels_mode, ...) is in {csv_name}."
        )
    else:
        legend.append(f"Every column ({len(df.columns)}, bootstrap SEs included) is in {csv_name}.")
    return text + "\n\n" + "\n\n".join(legend) + "\n"


def write_table(df: pd.DataFrame, csv_path, md_path=None, digits: int = 4, notes=(), reader=False) -> None:
    """``df`` as CSV and, with ``md_path``, as Markdown followed by ``notes``: every column, or with
    ``reader`` only the columns a person reads (:func:`reader_markdown`): True for a
    diversity-like table, or a view name of READER_VIEWS ("mitigation", "budget", "ensembles")."""
    with atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False)
    if md_path:
        if reader is True:
            text = reader_markdown(df, Path(csv_path).name)
        elif reader:
            columns, legend = READER_VIEWS[reader]
            text = reader_markdown(df, Path(csv_path).name, columns, (legend,))
        else:
            text = df.to_markdown(index=False, floatfmt=f".{digits}g") + "\n"
        with atomic_path(md_path) as tmp:
            with open(tmp, "w") as f:
                f.write(text)
                for line in notes:
                    f.write(f"\n{line}\n")


MITIGATION_COLUMNS = [
    "model",
    "condition",
    "method",
    "label",
    "n_replicas",
    "acc_mean",
    "acc_sd",
    "acc_sd_se",
    "ce_mean",
    "ce_sd",
    "ce_sd_se",
    "disagreement",
    "disagreement_se",
    "pearson",
    "pearson_se",
    "epochs",
    "cycles",
    "test_passes",
    "acc_sd_reduction",
    "ce_sd_reduction",
    "disagreement_reduction",
    "ens_acc_gain",
    "ens_acc_gain_se",
    "variability_reduction",
]


def _by_method(rows: list[dict], by: list[str], labels: dict | None = None) -> pd.DataFrame:
    """``rows`` sorted by ``by``, then method: in the order of ``labels`` (method name -> its words,
    nondet.workflow.plan_methods.method_labels, plug-ins included), else the registry's (plain, tta,
    snapshot, snapshot+tta, ema, ema+tta, swa, swa+tta); a ``label`` column added."""
    df = pd.DataFrame(rows)
    if labels:
        order = {m: i for i, m in enumerate(labels)}
        df["_m"] = df["method"].map(lambda m: order.get(m, len(order)))
        df["label"] = df["method"].map(lambda m: labels.get(m, m))
    else:  # <method>+tta:<name> (a list of TTA specs) rank as their method, in given order
        df["_m"] = df["method"].map(lambda m: Method.parse(m).rank)
        df["label"] = df["method"].map(lambda m: Method.parse(m).label)
    return df.sort_values([*by, "_m"], kind="stable").drop(columns="_m").reset_index(drop=True)


def _ratio_to_plain(df: pd.DataFrame, by: list[str], metric: str) -> pd.Series:
    """``metric`` of each row over that of the plain row with the same ``by`` values."""
    plain = df[df["method"] == "plain"].set_index(by)[metric]
    ref = df.set_index(by).index.map(plain.get)
    return df[metric] / ref.astype(float)


def _variability_reduction(df: pd.DataFrame, by: list[str]) -> pd.Series:
    """The paper's 5-metric variability reduction (nondet.analysis.paper) of each row against the plain
    row with the same ``by`` values."""
    from nondet.analysis.paper import variability_reduction

    plain = df[df["method"] == "plain"].set_index(by)
    return pd.Series(
        [variability_reduction(plain.loc[tuple(r[k] for k in by)], r) for _, r in df.iterrows()],
        index=df.index,
        dtype=float,
    )


def mitigation_table(rows: list[dict], labels: dict | None = None) -> pd.DataFrame:
    """One row per (model, condition, method); ``*_reduction`` = % reduction against plain;
    ``variability_reduction`` = the paper's mean relative reduction over five metrics."""
    by = ["model", "condition"]
    df = _by_method(rows, by, labels)
    for metric in ("acc_sd", "ce_sd", "disagreement"):
        df[f"{metric}_reduction"] = 100.0 * (1.0 - _ratio_to_plain(df, by, metric))
    df["variability_reduction"] = _variability_reduction(df, by)
    return df[MITIGATION_COLUMNS]


BUDGET_COLUMNS = [
    "model",
    "condition",
    "epochs",
    "method",
    "label",
    "cycles",
    "test_passes",
    "n_replicas",
    "acc_mean",
    "acc_mean_se",
    "acc_sd",
    "acc_sd_se",
    "ce_mean",
    "ce_sd",
    "ce_sd_se",
    "disagreement",
    "disagreement_se",
    "acc_sd_vs_plain",
    "ce_sd_vs_plain",
    "disagreement_vs_plain",
    "variability_reduction",
]


def budget_table(rows: list[dict], labels: dict | None = None) -> pd.DataFrame:
    """Mitigation versus training budget: one row per (model, condition, epochs, method).
    ``*_vs_plain`` = % change against plain at the same budget (negative: less variable than
    plain); ``acc_mean_se`` = acc_sd / sqrt(n_replicas), the standard error of the mean;
    ``variability_reduction``: the paper's 5-metric reduction against plain (positive: less)."""
    by = ["model", "condition", "epochs"]
    df = _by_method(rows, by, labels)
    df["acc_mean_se"] = df["acc_sd"] / df["n_replicas"].astype(float) ** 0.5
    for metric in ("acc_sd", "ce_sd", "disagreement"):
        df[f"{metric}_vs_plain"] = 100.0 * (_ratio_to_plain(df, by, metric) - 1.0)
    df["variability_reduction"] = _variability_reduction(df, by)
    return df[BUDGET_COLUMNS]


def budget_notes(df: pd.DataFrame) -> list[str]:
    """Per (model, condition, method): its disagreement against plain at each budget, and the
    smallest budget from which it stays below plain (or that it never does)."""
    lines = []
    for (model, condition, method), g in df[df["method"] != "plain"].groupby(
        ["model", "condition", "method"], sort=False
    ):
        g = g.sort_values("epochs")
        changes = ", ".join(f"{c:+.0f} % at {e}" for e, c in zip(g["epochs"], g["disagreement_vs_plain"]))
        below = list(g["disagreement_vs_plain"] < 0)
        start = next((i for i in range(len(below)) if all(below[i:])), None)
        verdict = (
            f"below plain from {g['epochs'].iloc[start]} epochs on"
            if start is not None
            else "not below plain at the largest budget"
        ) + " (point estimates: see disagreement_se)"
        lines.append(f"{model}/{condition} {method}: disagreement vs plain {changes} epochs; {verdict}.")
    return lines


#: Reader views of the other tables: name -> (columns, legend).
READER_VIEWS = {
    "mitigation": (MITIGATION_READER_COLUMNS, MITIGATION_LEGEND),
    "budget": (BUDGET_READER_COLUMNS, BUDGET_LEGEND),
    "ensembles": (ENSEMBLE_READER_COLUMNS, ENSEMBLE_LEGEND),
}
