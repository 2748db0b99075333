"""Figures: conditions compared on each diversity metric, with bootstrap error bars."""

from __future__ import annotations

import matplotlib
import numpy as np

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402

from nondet.io.h5io import atomic_path  # noqa: E402


def _save(fig, pdf_path, png_path):
    """Write ``fig`` as PDF and PNG, each atomically, and free it."""
    for path in (pdf_path, png_path):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120)
    plt.close(fig)


PANELS = [
    ("acc_sd", "SD of accuracy (percentage points)"),
    ("ce_sd", "SD of cross-entropy (nats)"),
    ("disagreement", "pairwise disagreement (%)"),
    ("pearson", "logit correlation (Pearson)"),
    ("ens_acc_gain", "2-model ensemble accuracy gain (pp)"),
    ("cka", "linear CKA of features"),
]


def condition_label(row: dict) -> str:
    """Condition name, marked when the kernels source is only a CPU stand-in."""
    if "standin" in row.get("kernels_mode", ""):  # kernels, all, or a condition that varies them
        return row["condition"] + "*"
    return row["condition"]


def diversity_figure(rows: list[dict], title: str, pdf_path, png_path) -> None:
    from nondet.seeds import CONDITIONS

    order = list(CONDITIONS)
    # imported groups of runs (nondet.io.runs) are named freely: after the conditions, in given order
    rows = sorted(rows, key=lambda r: order.index(r["condition"]) if r["condition"] in order else len(order))
    labels = [condition_label(r) for r in rows]
    ncols = 3  # the grid follows PANELS: a panel added there gets its axes, none is dropped
    nrows = -(-len(PANELS) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(12, 3.25 * nrows), squeeze=False, constrained_layout=True)
    for ax in axes.flat[len(PANELS) :]:
        ax.set_visible(False)
    for ax, (key, name) in zip(axes.flat, PANELS, strict=False):
        values = [r.get(key, float("nan")) for r in rows]
        errors = [r.get(f"{key}_se", float("nan")) for r in rows]
        colors = ["0.6" if r["condition"] == "control" else ("C3" if r["condition"] == "all" else "C0") for r in rows]
        ax.bar(range(len(rows)), values, yerr=errors, color=colors, capsize=3)
        ax.set_xticks(range(len(rows)), labels, rotation=45, ha="right")
        ax.set_title(name, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    n = rows[0]["n_replicas"] if rows else 0
    device = rows[0]["device"] if rows else ""
    note = "  (* kernels: CPU stand-in, within-batch permutation)" if any("*" in label for label in labels) else ""
    fig.suptitle(f"{title}: diversity by source, {n} replicas each, {device}{note}", fontsize=11)
    _save(fig, pdf_path, png_path)


def divergence_figure(div: dict, pdf_path, png_path) -> None:
    """Twin-run divergence over training: relative parameter distance and test disagreement."""
    steps = div["steps"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    colors = {"bitflip": "C3", "init": "C0", "shuffle": "C2", "augment": "C1", "dropout": "C4"}
    for name, run in div["runs"].items():
        if name == "base":
            continue
        style = {"color": colors.get(run["condition"], "k"), "alpha": 0.85, "lw": 1.4}
        zero = run.get("zero_from_step", -1)
        label = name if zero < 0 else f"{name} (absorbed: equal to base from step {zero})"
        ax1.plot(steps, run["distance"], label=label, **style)  # exact zeros fall off the log axis
        ax2.plot(steps, run["disagreement"], label=label, **style)
        if zero >= 0:
            ax1.axvline(zero, ls=":", **style)
    for ax in (ax1, ax2):
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel(f"optimizer steps ({div['steps_per_epoch']} per epoch)")
        ax.grid(alpha=0.3)
    ax1.set_yscale("log")
    ax1.set_ylabel(r"$\|\theta-\theta'\| / \|\theta\|$")
    ax2.set_ylabel("test disagreement with base run (%)")
    ax1.legend(fontsize=8)
    fig.suptitle(f"{div['model']}: twins of one base run (bitflip = one initial weight +-1 ulp)")
    _save(fig, pdf_path, png_path)


def mitigation_figure(df, pdf_path, png_path) -> None:
    """Each method beside plain, per (model, condition): three variability panels (SD of accuracy,
    SD of cross-entropy, disagreement; lower is less variable) and mean accuracy beside them, with
    bootstrap-SE error bars (SE of the mean for accuracy). Every method is a bar: a value of zero
    shows as a flat bar labelled 0, a missing one (NaN) as "n/a"."""
    panels = [
        ("acc_sd", "SD of accuracy (pp)", "acc_sd_se"),
        ("ce_sd", "SD of cross-entropy (nats)", "ce_sd_se"),
        ("disagreement", "disagreement (% of test examples)", "disagreement_se"),
        ("acc_mean", "mean accuracy (%)", None),
    ]
    groups = list(df.groupby(["model", "condition"], sort=False))
    fig, axes = plt.subplots(len(groups), 4, figsize=(15, 3.8 * len(groups)), squeeze=False, constrained_layout=True)
    for row_axes, ((model, condition), g) in zip(axes, groups):
        labels = [f"{m}\n{p} pass" for m, p in zip(g["method"], g["test_passes"])]
        for ax, (key, name, se_key) in zip(row_axes, panels):
            values = g[key].astype(float).to_numpy()
            if se_key is None:  # accuracy: SE of the mean over replicas
                err = g["acc_sd"].astype(float).to_numpy() / g["n_replicas"].astype(float).to_numpy() ** 0.5
            else:
                err = g[se_key].astype(float).to_numpy() if se_key in g else None
            x = range(len(g))
            ax.bar(
                x,
                np.nan_to_num(values),
                yerr=None if err is None else np.nan_to_num(err),
                capsize=3,
                color=[f"C{i % 10}" for i in x],
            )
            for i, v in zip(x, values):
                if not np.isfinite(v) or v == 0:
                    ax.annotate("n/a" if not np.isfinite(v) else "0", (i, 0), ha="center", va="bottom", fontsize=7)
            if key == "acc_mean" and np.isfinite(values).any():
                lo, hi = np.nanmin(values - np.nan_to_num(err)), np.nanmax(values + np.nan_to_num(err))
                ax.set_ylim(lo - 0.5 * (hi - lo + 0.1), hi + 0.2 * (hi - lo + 0.1))
            ax.set_xticks(list(x), labels, fontsize=7, rotation=45, ha="right")
            ax.set_title(f"{model}/{condition}: {name}", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
    epochs = ", ".join(str(int(e)) for e in sorted(set(df["epochs"])))
    fig.suptitle(
        f"Run-to-run variability by method at equal training budget ({epochs} epochs; lower = less variable; "
        "error bars: bootstrap SE, SE of the mean for accuracy)",
        fontsize=10,
    )
    _save(fig, pdf_path, png_path)


def budget_figure(df, pdf_path, png_path) -> None:
    """Mitigation versus training budget: per (model, condition) a row of panels (SD of accuracy,
    disagreement, accuracy), the budget on a log axis, one line per method with SE error bars
    (methods offset a little sideways so their bars do not overlap)."""
    panels = [
        ("acc_sd", "SD of accuracy (%)"),
        ("disagreement", "pairwise disagreement (%)"),
        ("acc_mean", "mean accuracy (%)"),
    ]
    groups = list(df.groupby(["model", "condition"], sort=False))
    fig, axes = plt.subplots(
        len(groups), len(panels), figsize=(13, 3.6 * len(groups)), squeeze=False, constrained_layout=True
    )
    for row_axes, ((model, condition), g) in zip(axes, groups):
        methods = list(dict.fromkeys(g["method"]))
        budgets = sorted(set(g["epochs"]))
        for ax, (key, name) in zip(row_axes, panels):
            for i, method in enumerate(methods):
                m = g[g["method"] == method].sort_values("epochs")
                shift = 1.03 ** (i - (len(methods) - 1) / 2)
                style = {"marker": "o", "ms": 4, "capsize": 3, "lw": 1.4, "color": f"C{i}", "label": method}
                ax.errorbar(m["epochs"] * shift, m[key], yerr=m[f"{key}_se"], **style)
            ax.set_xscale("log")
            ax.set_xticks(budgets, [str(b) for b in budgets])
            ax.minorticks_off()
            ax.set_xlabel("training budget (epochs)")
            ax.set_title(f"{model}/{condition}: {name}", fontsize=9)
            ax.grid(alpha=0.3)
        row_axes[0].legend(fontsize=8)
    n = int(df["n_replicas"].min()) if len(df) else 0
    fig.suptitle(
        f"Mitigation versus training budget ({n} replicas; error bars: bootstrap SE, SE of the mean for accuracy)",
        fontsize=11,
    )
    _save(fig, pdf_path, png_path)


def stability_figure(df, pdf_path, png_path) -> None:
    """Init and one-ulp diversity by model: a stable model has ~0 for bitflip."""
    panels = [
        ("disagreement", "pairwise disagreement (% of test examples)"),
        ("acc_sd", "SD of accuracy (percentage points)"),
        ("pearson", "logit correlation (Pearson)"),
    ]
    models = list(dict.fromkeys(df["model"]))
    conditions = [c for c in ("init", "bitflip", "all") if c in set(df["condition"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 4), constrained_layout=True)
    width = 0.8 / max(len(conditions), 1)
    for ax, (key, name) in zip(axes, panels):
        for j, cond in enumerate(conditions):
            sub = df[df["condition"] == cond].set_index("model").reindex(models)
            ax.bar(
                [i + j * width for i in range(len(models))],
                sub[key],
                width,
                yerr=sub.get(f"{key}_se"),
                capsize=2,
                label=cond,
            )
            # a zero-height bar reads "0"; a value the table lacks reads "n/a" (no bar is drawn)
            for i, value in enumerate(sub[key]):
                x = i + j * width
                if value != value:  # NaN: this model has no such row
                    ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color="0.4")
                elif value == 0:
                    ax.text(x, 0, "0", ha="center", va="bottom", fontsize=7)
        ax.set_xticks([i + width * (len(conditions) - 1) / 2 for i in range(len(models))], models)
        ax.set_xlim(-0.5, len(models) - 0.5 + width * (len(conditions) - 1))  # room for every slot
        ax.set_title(name, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    have = set(zip(df["model"], df["condition"]))
    missing = [f"{m}: no {c}" for m in models for c in ("init", "bitflip") if (m, c) not in have]
    note = f"\n(not run: {', '.join(missing)})" if missing else ""
    fig.suptitle(
        "Stability by model family: diversity from a new init vs from one ulp (bitflip near 0 = stable)" + note,
        fontsize=11,
    )
    _save(fig, pdf_path, png_path)


def comparison_figure(values: dict, verdicts, name: str, pdf_path, png_path) -> None:
    """Per-replica values of both arms, with the verdict of each metric (nondet.analysis.inference) above."""
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True)
    # differences of accuracy are in percentage points (pt), of cross-entropy in nats
    units = {"accuracy": (" pt", "test accuracy (%)"), "cross_entropy": (" nats", "test cross-entropy (nats)")}
    for ax, metric in zip(axes, ("accuracy", "cross_entropy")):
        unit, ylabel = units[metric]
        ax.set_ylabel(ylabel)
        v = verdicts[verdicts["metric"] == metric].iloc[0]
        for x, arm in enumerate(("baseline", "candidate")):
            y = values[arm][metric]
            jitter = np.linspace(-0.08, 0.08, len(y))
            ax.plot(x + jitter, y, "o", alpha=0.6, color=f"C{x}")
            if len(y) > 1:
                ax.errorbar(x + 0.25, y.mean(), yerr=y.std(ddof=1), fmt="s", color=f"C{x}", capsize=4)
        ax.set_xticks([0, 1], ["baseline", "candidate"])
        ax.set_title(
            f"{metric}: {v['decision']}\ncandidate - baseline {v['difference']:+.3g}{unit} "
            f"[{v['diff_low']:+.3g}, {v['diff_high']:+.3g}] ({v['diff_test']}, p={v['p_value']:.2g})\n"
            f"P(cand. better) {v['p_better']:.2f} [{v['p_better_low']:.2f}, {v['p_better_high']:.2f}]",
            fontsize=9,
        )
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"comparison {name}: each dot a replica (mean +- SD beside)", fontsize=11)
    _save(fig, pdf_path, png_path)


def components_figure(df, name: str, pdf_path, png_path) -> None:
    """Variance components of a factorial design, with bootstrap standard errors."""
    metrics = list(dict.fromkeys(df["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), constrained_layout=True, squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sub = df[df["metric"] == metric]
        ref = dict(zip(sub["effect"], sub["component"]))
        sub = sub[~sub["effect"].isin(["total", "indep"])]  # references, drawn as lines
        ax.bar(range(len(sub)), sub["component"], yerr=sub["component_se"], capsize=3)
        ax.set_xticks(range(len(sub)), sub["effect"], rotation=30, ha="right")
        ax.axhline(0, color="k", lw=0.8)
        if "indep" in ref:
            ax.axhline(ref["indep"], color="C3", ls="--", lw=1, label="independent per-example flips")
            ax.legend(fontsize=8)
        ax.set_title(f"{metric}: variance components", fontsize=10)
        ax.set_ylabel("variance (%²)" if metric == "accuracy" else "variance (nats²)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"factorial design {name}", fontsize=11)
    _save(fig, pdf_path, png_path)


def ensembles_figure(df, pdf_path, png_path) -> None:
    """k-model ensembles against training cost (runs), per (model, condition): SD of accuracy,
    disagreement between ensembles and mean accuracy; snapshot ensembles and TTA (one training
    run each) as labelled markers at 1 run."""
    panels = [
        ("acc_sd", "SD of accuracy (%)"),
        ("disagreement", "disagreement between ensembles (%)"),
        ("acc_mean", "mean accuracy (%)"),
    ]
    groups = list(df.groupby(["model", "condition"], sort=False))
    fig, axes = plt.subplots(
        len(groups), len(panels), figsize=(13, 3.6 * len(groups)), squeeze=False, constrained_layout=True
    )
    for row_axes, ((model, condition), g) in zip(axes, groups):
        ens = g[g["method"] == "ensemble"].sort_values("train_runs")
        others = g[g["method"] != "ensemble"]
        for ax, (key, name) in zip(row_axes, panels):
            ax.plot(ens["train_runs"], ens[key], "o-", color="C0", label="k-model ensemble")
            for i, (_, r) in enumerate(others.iterrows()):
                label = f"{r['method']} ({r['test_passes']} passes)"
                ax.plot([r["train_runs"]], [r[key]], "s", color=f"C{i + 1}", label=label)
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(ens["train_runs"]), [str(k) for k in ens["train_runs"]])
            ax.set_xlabel("training runs (k models averaged)")
            ax.set_title(f"{model}/{condition}: {name}", fontsize=9)
            ax.grid(alpha=0.3)
        row_axes[0].legend(fontsize=7)
    fig.suptitle("Averaging k models against run-to-run noise (snapshot ensembles and TTA: 1 run)", fontsize=11)
    _save(fig, pdf_path, png_path)
