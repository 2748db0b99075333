"""The stages that need no torch (rules in envs/analysis.yaml): pairwise metrics, tables,
figures, provenance, mitigation (also versus training budget) and stability tables, comparisons
and factorial designs.
pandas, the table writers and matplotlib are imported by the stages that use them: they cost
about half a second per job, and most jobs here (one per model and condition) draw nothing."""

from __future__ import annotations

import hashlib
import json
import math
import time

import numpy as np

from . import h5io
from .compare import compare_arms, per_example_split, per_example_values, variance_components
from .files import load_divergence, load_predictions, load_rows, write_metrics
from .h5io import InputError, provenance
from .metrics import accuracy, cka_on, cross_entropy, summarize
from .runtime import get_logger, stage


@stage
def metrics(predict_paths, out_path, params: dict, log_path=None) -> None:
    """The diversity metrics of one (model, condition) from its prediction files."""

    log = get_logger(log_path)
    t0 = time.perf_counter()
    pred = load_predictions(predict_paths, params.get("inputs"))
    group = f"{params['model']}/{params['condition']}"
    diverged = pred["diverged"]
    if diverged.any():
        names = ", ".join(str(r) for r in pred["replicas"][diverged])
        if params.get("on_diverged", "exclude") == "fail":
            raise InputError(
                f"{group}: {diverged.sum()} replica(s) diverged (loss NaN/inf): {names}; "
                "set metrics.on_diverged: exclude to drop them from the aggregates"
            )
        log.warning(f"{group}: EXCLUDING {diverged.sum()} diverged replica(s) from aggregates: {names}")
    keep = ~diverged
    if keep.sum() < 2:
        raise InputError(f"{group}: pairwise metrics need >= 2 replicas that did not diverge, have {keep.sum()}")
    row, arrays = summarize(
        pred["logits"][keep],
        pred["labels"],
        pred["features"][keep],
        params["bootstrap_resamples"],
        params["seed"],
    )
    job = pred["job"]
    row = {
        "model": params["model"],
        "condition": params["condition"],
        "device": pred["device"],
        "kernels_mode": pred["kernels_mode"],
        "epochs": job["recipe"]["epochs"],
        "cycles": job["recipe"]["cycles"],
        "method": pred["method"],
        # features, or logits where the model has none (imported runs: set below)
        "cka_on": cka_on(job["model_spec"]) if "model_spec" in job else "",
        "test_passes": pred["test_passes"],
        **row,
        "n_diverged": int(diverged.sum()),
        "n_absorbed": absorbed_count(pred["absorbed"][keep]),
        "n_identical_pairs": identical_pairs(pred["logits"][keep]),
        **({"cka_on": pred["cka_on"]} if pred["cka_on"] else {}),  # imported runs: logits or features
    }
    prov = provenance(
        kind="metrics",
        params=params,
        experiment=job["experiment"],
        data_hash=job["data_hash"],
        spec_hash=h5io.spec_hash(params),  # params name the spec of every input
    )
    write_metrics(out_path, prov, row, arrays, pred["replicas"][keep], pred["replicas"][diverged])
    log.info(
        f"{row['model']}/{row['condition']}: acc {row['acc_mean']:.2f}±{row['acc_sd']:.2f}% "
        f"disagreement {row['disagreement']:.2f}% ({time.perf_counter() - t0:.1f}s)"
    )
    pairs = row["n_replicas"] * (row["n_replicas"] - 1) // 2
    if (params["condition"] == "control") != (row["n_identical_pairs"] == pairs):
        log.warning(
            f"{group}: {row['n_identical_pairs']} of {pairs} pairs of replicas have bitwise "
            "identical test logits" + (" (control should be all)" if params["condition"] == "control" else "")
        )
    if row["n_absorbed"] > 0:
        log.warning(
            f"{group}: {row['n_absorbed']:.0f} of {row['n_replicas']} one-ulp flips were absorbed "
            "(final weights bitwise equal to the unperturbed run): they add no diversity"
        )


def identical_pairs(logits: np.ndarray) -> int:
    """Pairs of replicas whose test logits are bitwise identical: all of them in ``control``,
    none in a condition whose source really varied (a kernels source that produced no
    nondeterminism on this device, or flips all absorbed, would show here)."""

    digests = [hashlib.sha256(np.ascontiguousarray(z).tobytes()).hexdigest() for z in logits]
    counts = {}
    for d in digests:
        counts[d] = counts.get(d, 0) + 1
    return int(sum(c * (c - 1) // 2 for c in counts.values()))


def absorbed_count(absorbed: np.ndarray) -> float:
    """How many flipped replicas absorbed their flip; NaN when there was no flip to check."""
    absorbed = np.asarray(absorbed)
    if absorbed.size == 0 or (absorbed < 0).any():
        return float("nan")
    return float(absorbed.sum())


@stage
def diversity_table(metric_paths, csv_path, md_path, log_path=None, expect=None) -> None:
    from .tables import diversity_frame, table_notes, write_table

    log = get_logger(log_path)
    h5io.check_same_experiment(metric_paths, "data_hash")
    df = diversity_frame(load_rows(metric_paths, expect))
    notes = table_notes(df)
    write_table(df, csv_path, md_path, notes=notes)
    for line in notes:
        log.info(line)
    log.info(f"wrote {csv_path} and {md_path} ({len(df)} rows)")


@stage
def plot(metric_paths, pdf_path, png_path, model: str, log_path=None, expect=None) -> None:
    from .plots import diversity_figure

    log = get_logger(log_path)
    rows = [r for r in load_rows(metric_paths, expect) if r["model"] == model]
    diversity_figure(rows, model, pdf_path, png_path)
    log.info(f"wrote {pdf_path} and {png_path}")


@stage
def provenance_table(config: dict, csv_path, log_path=None) -> None:
    """Provenance of the run (versions, code version, config hash) for the report."""
    import pandas as pd

    try:  # the run's torch (its versions are in the provenance); absent in the analysis env
        import torch  # noqa: F401
    except ImportError:
        pass
    prov = provenance(config_hash=h5io.spec_hash(config), experiment=config["experiment"])
    versions = prov.pop("versions")
    rows = [(k, json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in prov.items()]
    rows += [(f"version:{k}", v) for k, v in versions.items()]
    rows.append(("config", json.dumps(config, sort_keys=True)))
    with h5io.atomic_path(csv_path) as tmp:
        pd.DataFrame(rows, columns=["key", "value"]).to_csv(tmp, index=False)
    get_logger(log_path).info(f"wrote {csv_path}")


@stage
def plot_divergence(divergence_path, pdf_path, png_path, log_path=None, expect=None) -> None:
    from .plots import divergence_figure

    divergence_figure(load_divergence(divergence_path, expect), pdf_path, png_path)
    get_logger(log_path).info(f"wrote {pdf_path} and {png_path}")


@stage
def mitigation_table(metric_paths, csv_path, md_path, pdf_path, png_path, log_path=None,
                     expect=None):  # fmt: skip
    """Plain vs TTA vs snapshot ensemble vs both, per (model, condition), with reductions."""
    from .plots import mitigation_figure
    from .tables import mitigation_table as make_table
    from .tables import write_table

    h5io.check_same_experiment(metric_paths, "data_hash")
    df = make_table(load_rows(metric_paths, expect))
    write_table(df, csv_path, md_path)
    mitigation_figure(df, pdf_path, png_path)
    get_logger(log_path).info(f"wrote {csv_path}, {md_path} and figures ({len(df)} rows)")


@stage
def mitigation_budget(metric_paths, csv_path, md_path, pdf_path, png_path, log_path=None, expect=None) -> None:
    """Plain vs TTA vs snapshot ensemble vs both at each training budget: table and figure."""
    from .plots import budget_figure
    from .tables import budget_notes, budget_table, write_table

    log = get_logger(log_path)
    if not metric_paths:
        raise InputError("budget.models is empty: no budget study to tabulate")
    h5io.check_same_experiment(metric_paths, "data_hash")
    df = budget_table(load_rows(metric_paths, expect))
    notes = budget_notes(df)
    write_table(df, csv_path, md_path, notes=notes)
    budget_figure(df, pdf_path, png_path)
    for line in notes:
        log.info(line)
    log.info(f"wrote {csv_path}, {md_path} and figures ({len(df)} rows)")


@stage
def stability(metric_paths, csv_path, md_path, pdf_path, png_path, log_path=None,
                    expect=None):  # fmt: skip
    """Init and one-ulp diversity by model family: table and figure."""
    from .plots import stability_figure
    from .tables import diversity_frame, table_notes, write_table

    df = diversity_frame(load_rows(metric_paths, expect))
    write_table(df, csv_path, md_path, notes=table_notes(df))
    stability_figure(df, pdf_path, png_path)
    get_logger(log_path).info(f"wrote {csv_path}, {md_path} and figures ({len(df)} rows)")


@stage
def compare(baseline_paths, candidate_paths, csv_path, pdf_path, png_path, params: dict,
            log_path=None) -> None:  # fmt: skip
    """Candidate vs baseline on accuracy and cross-entropy, against run-to-run noise."""

    import pandas as pd

    from .plots import comparison_figure

    log = get_logger(log_path)
    h5io.check_same_experiment(list(baseline_paths) + list(candidate_paths), "data_hash")
    inputs = params.get("inputs", {})
    arms = {"baseline": load_predictions(baseline_paths, inputs.get("baseline")),
            "candidate": load_predictions(candidate_paths, inputs.get("candidate"))}  # fmt: skip
    values, per_example = {}, {}
    for arm, pred in arms.items():
        keep = ~pred["diverged"]
        if (~keep).any():
            log.warning(f"{arm}: excluding {(~keep).sum()} diverged replica(s)")
        per_example[arm] = per_example_values(pred["logits"][keep], pred["labels"])
        values[arm] = {  # exactly as in the diversity table (ties matter to permutation tests)
            "accuracy": accuracy(pred["logits"][keep], pred["labels"]),
            "cross_entropy": cross_entropy(pred["logits"][keep], pred["labels"]),
        }
    rows = []
    for metric in ("accuracy", "cross_entropy"):
        effect = params["effect"] if metric == "accuracy" else None
        res = compare_arms(values["baseline"][metric], values["candidate"][metric], params["alpha"],
                           params["power"], effect, params["bootstrap_resamples"], params["seed"])  # fmt: skip
        # each arm's run-to-run SD if its examples flipped independently (shrinks as 1/sqrt(n))
        indep = {f"{arm}_sd_indep": math.sqrt(max(0.0, per_example_split(per_example[arm][metric])["indep"]))
                 for arm in ("baseline", "candidate")}  # fmt: skip
        rows.append({"comparison": params["name"], "metric": metric, **res, **indep})
        log.info(
            f"{params['name']} {metric}: candidate - baseline = {res['diff']:+.4g} "
            f"[{res['ci_low']:+.4g}, {res['ci_high']:+.4g}], Welch p={res['welch_p']:.3g}, "
            f"permutation p={res['permutation_p']:.3g}, {res['effect_in_sd']:+.2f} SD; "
            f"replicas per arm to detect {res['detect_diff']:+.3g}: {res['replicas_needed']}"
        )
    df = pd.DataFrame(rows)
    with h5io.atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False)
    comparison_figure(values, df, params["name"], pdf_path, png_path)


@stage
def factorial(predict_paths, csv_path, pdf_path, png_path, params: dict, log_path=None) -> None:
    """Variance components of accuracy and cross-entropy over a factorial design of seeds."""
    import pandas as pd

    from .plots import components_figure

    log = get_logger(log_path)
    pred = load_predictions(predict_paths, params.get("inputs"))
    if pred["diverged"].any():
        raise InputError(f"{params['name']}: diverged runs leave holes in the factorial design")
    cells = [tuple(c) for c in params["cells"]]
    shape = tuple(params["levels"])
    per_example = per_example_values(pred["logits"], pred["labels"])  # finite-test-set reference
    rows = []
    for metric, fn in (("accuracy", accuracy), ("cross_entropy", cross_entropy)):
        y = np.full(shape, np.nan)
        for r, v in zip(pred["replicas"], fn(pred["logits"], pred["labels"])):
            y[cells[int(r)]] = v
        if np.isnan(y).any():
            raise InputError(f"{params['name']}: some cells of the design have no prediction")
        for row in variance_components(y, params["sources"], params["bootstrap_resamples"], params["seed"]):
            rows.append({"design": params["name"], "metric": metric, **row})
        # references, not components: the variance over cells, and what independent
        # per-example flips would give (the part that vanishes with an infinite test set)
        split = per_example_split(per_example[metric])
        for effect, value in (("total", split["total"]), ("indep", split["indep"])):
            rows.append({"design": params["name"], "metric": metric, "effect": effect,
                         "df": len(cells) - 1, "component": value})  # fmt: skip
        log.info(
            f"{params['name']} {metric}: variance over cells {split['total']:.4g}, of which "
            f"{split['indep']:.4g} what independent per-example flips would give"
        )
    df = pd.DataFrame(rows)
    with h5io.atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False)
    components_figure(df, params["name"], pdf_path, png_path)


# --- the paper's published numbers beside ours ------------------------------------------------


@stage
def paper_comparison(expected_path, diversity_path, mitigation_path, csv_path, md_path,
                     log_path=None) -> None:  # fmt: skip
    """A run's diversity (and mitigation) rows beside paper/expected.csv, converted to the
    paper's conventions (nondet.paper)."""
    import pandas as pd

    from .paper import paper_comparison as compare_rows
    from .tables import write_table

    log = get_logger(log_path)
    expected = pd.read_csv(expected_path)
    diversity = pd.read_csv(diversity_path)
    mitigation = pd.read_csv(mitigation_path) if mitigation_path else None
    df = compare_rows(expected, diversity, mitigation)
    missing = len(expected) - len(df)
    notes = [f"{missing} of the paper's {len(expected)} numbers have no row in this run "
             "(model/condition/method not trained)."] if missing else []  # fmt: skip
    write_table(df, csv_path, md_path, notes=notes)
    for line in notes:
        log.warning(line)
    log.info(f"wrote {csv_path} and {md_path} ({len(df)} of {len(expected)} published numbers)")


@stage
def ensembles(predict_paths, out_path, params: dict, log_path=None) -> None:
    """k-model ensembles of one (model, condition)'s replicas (nondet.ensembles) as HDF5: per k
    a group ``k<k>`` with the ensembles' logits, their members and the table row."""
    from .ensembles import ensemble_row, ensemble_sizes, make_ensembles

    log = get_logger(log_path)
    pred = load_predictions(predict_paths, params.get("inputs"))
    group = f"{params['model']}/{params['condition']}"
    keep = ~pred["diverged"]
    if (~keep).any():
        log.warning(f"{group}: excluding {(~keep).sum()} diverged replica(s)")
    order = np.argsort(pred["replicas"][keep], kind="stable")
    logits, replicas = pred["logits"][keep][order], pred["replicas"][keep][order]
    ks = ensemble_sizes(len(logits))
    if not ks:
        raise InputError(f"{group}: ensembles need >= 2 replicas that did not diverge, have {len(logits)}")
    job = pred["job"]
    prov = provenance(kind="ensembles", params=params, experiment=job["experiment"],
                      data_hash=job["data_hash"], spec_hash=h5io.spec_hash(params))  # fmt: skip
    with h5io.atomic_h5(out_path, prov) as f:
        f.create_dataset("labels", data=pred["labels"])
        for k in ks:
            ens = make_ensembles(logits, k)
            row = {"model": params["model"], "condition": params["condition"], "method": "ensemble",
                   "models_averaged": k, "train_runs": k, "test_passes": k * pred["test_passes"],
                   "epochs": job["recipe"]["epochs"], **ensemble_row(ens, pred["labels"])}  # fmt: skip
            g = f.create_group(f"k{k}")
            g.create_dataset("logits", data=ens)
            g.create_dataset("members", data=replicas[: len(ens) * k].reshape(len(ens), k))
            g.attrs["row"] = json.dumps(row)
            log.info(f"{group} k={k}: {len(ens)} ensembles, acc {row['acc_mean']:.2f}±{row['acc_sd']:.3f}%, "
                     f"disagreement {row['disagreement']:.2f}%")  # fmt: skip


def load_ensemble_rows(paths, expect=None) -> list[dict]:
    from .files import _expectations

    rows = []
    for p, e in zip(paths, _expectations(paths, expect)):
        with h5io.open_input(p, "ensembles", e) as f:
            rows += sorted((json.loads(f[g].attrs["row"]) for g in f if g.startswith("k")),
                           key=lambda r: r["models_averaged"])  # fmt: skip
    return rows


@stage
def ensemble_table(ensemble_paths, mitigation_paths, csv_path, md_path, pdf_path, png_path, log_path=None,
                   expect=None):  # fmt: skip
    """k-model ensembles beside snapshot ensembles and TTA (one training run each): table and
    figure of SD of accuracy, disagreement between ensembles and accuracy against the cost."""
    import pandas as pd

    from .plots import ensembles_figure
    from .tables import write_table

    log = get_logger(log_path)
    h5io.check_same_experiment(list(ensemble_paths) + list(mitigation_paths), "data_hash")
    rows = load_ensemble_rows(ensemble_paths, expect)
    for r in load_rows(mitigation_paths, expect):
        if r["method"] == "plain":  # the k = 1 row
            continue
        rows.append({"model": r["model"], "condition": r["condition"], "method": r["method"],
                     "models_averaged": r["cycles"] if r["method"].startswith("snapshot") else 1,
                     "train_runs": 1, "test_passes": r["test_passes"], "epochs": r["epochs"],
                     "n_ensembles": r["n_replicas"], **{k: r[k] for k in ("acc_mean", "acc_sd", "ce_mean",
                                                                          "ce_sd", "disagreement")}})  # fmt: skip
    columns = ["model", "condition", "method", "models_averaged", "train_runs", "test_passes", "epochs",
               "n_ensembles", "acc_mean", "acc_sd", "ce_mean", "ce_sd", "disagreement"]  # fmt: skip
    df = pd.DataFrame(rows, columns=columns)
    notes = []
    for (model, condition), g in df.groupby(["model", "condition"], sort=False):
        ens = g[g["method"] == "ensemble"].sort_values("train_runs")
        cheap = g[g["method"] != "ensemble"]
        line = f"{model}/{condition}: SD of accuracy " + ", ".join(
            f"{sd:.3g} % at k = {k}" for k, sd in zip(ens["models_averaged"], ens["acc_sd"])
        )
        if len(cheap):
            best = cheap.loc[cheap["acc_sd"].idxmin()]
            line += f"; with one training run, {best['method']} reaches {best['acc_sd']:.3g} %"
        notes.append(line + f" (ensembles of disjoint groups: {', '.join(map(str, ens['n_ensembles']))} of them).")
    write_table(df, csv_path, md_path, notes=notes)
    ensembles_figure(df, pdf_path, png_path)
    for line in notes:
        log.info(line)
    log.info(f"wrote {csv_path}, {md_path} and figures ({len(df)} rows)")
