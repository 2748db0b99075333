"""The stages that need no torch: the data set (the one job every other job waits for), and the
rules in envs/analysis.yaml: pairwise metrics, tables, figures, provenance, mitigation (also
versus training budget) and stability tables, ensembles, comparisons, factorial designs and
imported runs (import, all pairs).
pandas, the table writers and matplotlib are imported by the stages that use them: they cost
about half a second per job, and most jobs here (one per model and condition) draw nothing."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from nondet.analysis.metrics import accuracy, cka_on, cross_entropy, summarize
from nondet.analysis.variance import per_example_split, per_example_values, variance_components
from nondet.io import h5io
from nondet.io.files import kept_replicas, load_divergence, load_predictions, load_rows, write_metrics
from nondet.io.h5io import InputError, atomic_path
from nondet.io.runs import RunsError, array_checksum, import_group
from nondet.methods import Method, load_plugins
from nondet.workflow.runtime import get_logger, stage


@stage
def dataset(out_path, spec: dict, data_hash: str, log_path=None) -> None:
    """The dataset stage: make the arrays of ``spec`` and write them, with provenance, to
    ``out_path`` (nondet.io.files.write_dataset); no torch."""
    log = get_logger(log_path)
    from nondet.io.checksums import DataError, sha256_bytes
    from nondet.io.datasets import dataset_hash, make_dataset_arrays
    from nondet.io.files import arrays_sha256, write_dataset

    t0 = time.perf_counter()
    raw = None
    if spec["name"] == "arrays":
        # the file's bytes are read once, hashed and parsed: what is written is what was hashed
        path = Path(spec["path"])
        if not path.is_file():
            raise DataError(f"dataset.path: {path} not found (name: arrays needs a .npz or .h5 file)")
        raw = path.read_bytes()
        sha = sha256_bytes(raw)
        if dataset_hash(spec, sha) != data_hash:
            raise DataError(
                f"dataset.path: {path} changed after this workflow was planned (its SHA-256 is "
                f"now {sha}): run the workflow again, which plans with the new contents"
            )
        log.info(f"{path}: SHA-256 {sha}")
    arrays = make_dataset_arrays(spec, log=log.info, raw=raw)
    content = arrays_sha256(arrays)
    prov = h5io.provenance(kind="dataset", dataset=spec, data_hash=data_hash, content_sha256=content)
    write_dataset(out_path, prov, arrays)
    shapes = {k: v.shape for k, v in arrays.items()}
    log.info(f"wrote {out_path}: {shapes}, contents SHA-256 {content}, in {time.perf_counter() - t0:.1f}s")


@stage
def metrics(predict_paths, out_path, params: dict, log_path=None) -> None:
    """The diversity metrics of one (model, condition) from its prediction files."""

    log = get_logger(log_path)
    t0 = time.perf_counter()
    pred = load_predictions(predict_paths, params.get("inputs"))
    group = f"{params['model']}/{params['condition']}"
    diverged = pred["diverged"]
    keep = kept_replicas(diverged, pred["replicas"], group, params["on_diverged"], log.warning)
    if keep.sum() < 2:
        raise InputError(
            f"{group}: pairwise metrics need >= 2 replicas that did not diverge; the prediction "
            f"files hold {len(keep)} replica(s), {int(diverged.sum())} of them diverged"
        )
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
        **identical_pairs_by_job(pred["logits"][keep], pred["job_index"][keep]),
        **({"cka_on": pred["cka_on"]} if pred["cka_on"] else {}),  # imported runs: logits or features
        **({"audit_failed": pred["audit_failed"]} if pred.get("audit_failed") else {}),  # script, audit: warn
    }
    row["kernels_mode"] = measured_kernels_mode(row, job.get("sources"))
    prov = h5io.provenance(
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


def identical_pairs_by_job(logits: np.ndarray, job_index: np.ndarray) -> dict:
    """Bitwise-identical pairs of replicas trained in the same job and in different jobs, and
    how many pairs there are of each: whether the kernels source moved replicas that shared a
    process (on CUDA, cuDNN's autotuner picks its algorithms once per process)."""
    digests = [hashlib.sha256(np.ascontiguousarray(z).tobytes()).hexdigest() for z in logits]
    out = dict.fromkeys(("pairs_within_jobs", "identical_within_jobs", "pairs_across_jobs", "identical_across_jobs"), 0)
    for i in range(len(digests)):
        for j in range(i + 1, len(digests)):
            where = "within" if job_index[i] == job_index[j] else "across"
            out[f"pairs_{where}_jobs"] += 1
            out[f"identical_{where}_jobs"] += int(digests[i] == digests[j])
    return out


def measured_kernels_mode(row: dict, sources=None) -> str:
    """The kernels mode a table states, from what the replicas did, not from the flags alone:
    when only the kernels source varies (``sources`` == {"kernels"}, or the built-in condition
    ``kernels``) and the replicas asked for nondeterministic kernels, the mode says whether they
    were measured to differ within jobs, only across jobs, or not at all."""
    mode = row["kernels_mode"]
    only_kernels = set(sources) == {"kernels"} if sources is not None else row["condition"] == "kernels"
    if mode == "deterministic" or not only_kernels:
        return mode
    within, across = row["identical_within_jobs"], row["identical_across_jobs"]
    if within + across == 0:
        return mode  # every pair differs: measured nondeterministic
    if within == row["pairs_within_jobs"] and across == row["pairs_across_jobs"]:
        return f"{mode} (measured: no effect, every pair identical)"
    if within == row["pairs_within_jobs"] and within:
        return f"{mode} (measured: identical within a job, differs only across jobs)"
    return f"{mode} (measured: {within + across} identical pairs)"


def absorbed_count(absorbed: np.ndarray) -> float:
    """How many flipped replicas absorbed their flip; NaN when there was no flip to check."""
    absorbed = np.asarray(absorbed)
    if absorbed.size == 0 or (absorbed < 0).any():
        return float("nan")
    return float(absorbed.sum())


@stage
def diversity_table(metric_paths, csv_path, md_path, log_path=None, expect=None) -> None:
    from nondet.analysis.tables import diversity_frame, table_notes, write_table

    log = get_logger(log_path)
    h5io.check_same_experiment(metric_paths, "data_hash")
    df = diversity_frame(load_rows(metric_paths, expect))
    notes = table_notes(df)
    write_table(df, csv_path, md_path, notes=notes, reader=True)
    for line in notes:
        log.info(line)
    log.info(f"wrote {csv_path} and {md_path} ({len(df)} rows)")


@stage
def plot_diversity(metric_paths, pdf_path, png_path, model: str, log_path=None, expect=None) -> None:
    from nondet.analysis.plots import diversity_figure

    log = get_logger(log_path)
    rows = [r for r in load_rows(metric_paths, expect) if r["model"] == model]
    diversity_figure(rows, model, pdf_path, png_path)
    log.info(f"wrote {pdf_path} and {png_path}")


@stage
def provenance(config: dict, csv_path, log_path=None, files=()) -> None:
    """Provenance of the run (versions, code version, config hash) for the report; ``files``:
    the tables and figures it covers, each listed with its SHA-256 (nondet.workflow.reportcheck)."""
    import pandas as pd

    from nondet.workflow.reportcheck import file_rows

    try:  # the run's torch (its versions are in the provenance); absent in the analysis env
        import torch  # noqa: F401
    except ImportError:
        pass
    prov = h5io.provenance(config_hash=h5io.spec_hash(config), experiment=config["experiment"])
    versions = prov.pop("versions")
    rows = [(k, json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in prov.items()]
    rows += [(f"version:{k}", v) for k, v in versions.items()]
    rows.append(("config", json.dumps(config, sort_keys=True)))
    rows += file_rows(files)
    with h5io.atomic_path(csv_path) as tmp:
        pd.DataFrame(rows, columns=["key", "value"]).to_csv(tmp, index=False)
    get_logger(log_path).info(f"wrote {csv_path}")


@stage
def plot_divergence(divergence_path, pdf_path, png_path, log_path=None, expect=None) -> None:
    from nondet.analysis.plots import divergence_figure

    divergence_figure(load_divergence(divergence_path, expect), pdf_path, png_path)
    get_logger(log_path).info(f"wrote {pdf_path} and {png_path}")


@stage
def mitigation_table(metric_paths, csv_path, md_path, pdf_path, png_path, log_path=None, expect=None, labels=None):
    """Plain vs each method (TTA, snapshot ensemble, EMA, SWA, each with TTA; ``labels``: method
    name -> its words, in table order), per (model, condition), with reductions."""
    from nondet.analysis.plots import mitigation_figure
    from nondet.analysis.tables import mitigation_table as make_table
    from nondet.analysis.tables import write_table

    h5io.check_same_experiment(metric_paths, "data_hash")
    df = make_table(load_rows(metric_paths, expect), labels)
    write_table(df, csv_path, md_path, reader="mitigation")
    mitigation_figure(df, pdf_path, png_path)
    get_logger(log_path).info(f"wrote {csv_path}, {md_path} and figures ({len(df)} rows)")


@stage
def mitigation_budget(
    metric_paths, csv_path, md_path, pdf_path, png_path, log_path=None, expect=None, labels=None
) -> None:
    """Plain vs each mitigation method at each training budget: table and figure."""
    from nondet.analysis.plots import budget_figure
    from nondet.analysis.tables import budget_notes, budget_table, write_table

    log = get_logger(log_path)
    if not metric_paths:
        raise InputError("budget.models is empty: no budget study to tabulate")
    h5io.check_same_experiment(metric_paths, "data_hash")
    df = budget_table(load_rows(metric_paths, expect), labels)
    notes = budget_notes(df)
    write_table(df, csv_path, md_path, notes=notes, reader="budget")
    budget_figure(df, pdf_path, png_path)
    for line in notes:
        log.info(line)
    log.info(f"wrote {csv_path}, {md_path} and figures ({len(df)} rows)")


@stage
def stability(metric_paths, csv_path, md_path, pdf_path, png_path, log_path=None, expect=None):
    """Init and one-ulp diversity by model family: table and figure."""
    from nondet.analysis.plots import stability_figure
    from nondet.analysis.tables import diversity_frame, table_notes, write_table

    df = diversity_frame(load_rows(metric_paths, expect))
    write_table(df, csv_path, md_path, notes=table_notes(df), reader=True)
    stability_figure(df, pdf_path, png_path)
    get_logger(log_path).info(f"wrote {csv_path}, {md_path} and figures ({len(df)} rows)")


def _per_example_arms(paths: dict, inputs: dict, on_diverged: str, log, names: dict | None = None) -> dict:
    """arm -> metric -> per-example values (runs, n) of the runs kept by the diverged-replica
    policy (``on_diverged``); every arm on the same test set (same examples in the same order,
    checked). ``names``, when given, is filled with arm -> the kept runs' labels ("replica r")."""
    values, ref = {}, None
    for arm, arm_paths in paths.items():
        pred = load_predictions(list(arm_paths), inputs.get(arm))
        if ref is None:
            ref = (arm, arm_paths, pred["labels"])
        elif pred["labels"].shape != ref[2].shape or not np.array_equal(pred["labels"], ref[2]):
            raise InputError(
                f"the {ref[0]} ({', '.join(map(str, ref[1]))}) and the {arm} ({', '.join(map(str, arm_paths))}) "
                "were scored on different test sets: comparisons need the same examples in the same order"
            )
        keep = kept_replicas(pred["diverged"], pred["replicas"], arm, on_diverged, log.warning)
        values[arm] = per_example_values(pred["logits"][keep], pred["labels"])
        if names is not None:
            names[arm] = [f"replica {int(r)}" for r in np.asarray(pred["replicas"])[keep]]
    return values


@stage
def compare(baseline_paths, candidate_paths, out: dict, params: dict, log_path=None) -> None:
    """Rules compare (trained arms) and runs_compare (imported groups): every test of the
    verdict engine (nondet.analysis.inference) on accuracy and cross-entropy, the verdict, the plan and
    the figure. ``out``: paths csv (every test), verdict (one row per metric), md (the verdict
    in words), plan, pdf, png."""
    import pandas as pd

    from nondet.analysis import inference, planning
    from nondet.analysis.plots import comparison_figure
    from nondet.analysis.verdict import verdict, verdict_lines

    log = get_logger(log_path)
    paths = {"baseline": list(baseline_paths), "candidate": list(candidate_paths)}
    names: dict = {}
    values = _per_example_arms(paths, params.get("inputs", {}), params["on_diverged"], log, names)
    pairs = None
    if params.get("paired_by"):
        from nondet.io.runs import run_metadata

        meta = {arm: [m for p in ps for m in run_metadata(p)] for arm, ps in paths.items()}
        pairs = seed_pairs(meta["candidate"], meta["baseline"], params["paired_by"], log.info)
    name, alpha = params["name"], params["alpha"]
    try:
        rows = inference.compare(
            values["baseline"], values["candidate"], alpha, pairs, params["margin"], params["margin_kind"]
        )
    except inference.VerdictError as e:
        raise InputError(f"comparison {name}: {e}") from None
    runs = {arm: {m: v.mean(1) for m, v in values[arm].items()} for arm in values}
    scores = {**runs, "names": names, "pairs": pairs}
    verdicts = verdict(rows, params["gamma"], alpha, params["held_fixed"], runs=scores)
    plan = []
    for metric in values["baseline"]:
        b, a = values["baseline"][metric], values["candidate"][metric]
        for r in planning.plan(
            b,
            a,
            (params["effect"] or {}).get(metric),
            alpha,
            params["power"],
            gamma=params["gamma"],
            margin=(params["margin"] or {}).get(metric),
            higher_is_better=inference.HIGHER_IS_BETTER.get(metric, True),
        ):
            plan.append({"comparison": name, "metric": metric, **r})
    head = {"comparison": name, "baseline": params["baseline"], "candidate": params["candidate"]}
    for key, table in (("csv", rows), ("verdict", verdicts), ("plan", plan)):
        with h5io.atomic_path(out[key]) as tmp:
            pd.DataFrame([{**head, **r} for r in table]).to_csv(tmp, index=False)
    lines = verdict_lines(name, verdicts)
    for line in lines:
        log.info(line)
    for r in plan:
        log.info(planning.plan_line(r))
    text = [f"# Comparison {name}: {params['candidate']} against {params['baseline']}", ""]
    text += [f"- {line.strip()}" if line.startswith("  ") else f"\n**{line}**\n" for line in lines]
    text += [
        "",
        f"Every test: {out['csv']}; replicas per arm: {out['plan']}. "
        "Engine: nondet.analysis (inference, prob_better, verdict); calibration at 2-16 runs per arm, "
        "misbehaving runs included: docs/comparisons.md.",
        "",
    ]
    with h5io.atomic_path(out["md"]) as tmp, open(tmp, "w") as f:
        f.write("\n".join(text))
    comparison_figure(runs, pd.DataFrame(verdicts), name, out["pdf"], out["png"])


@stage
def factorial(predict_paths, csv_path, pdf_path, png_path, params: dict, log_path=None) -> None:
    """Variance components of accuracy and cross-entropy over a factorial design of seeds."""
    import pandas as pd

    from nondet.analysis.plots import components_figure

    log = get_logger(log_path)
    pred = load_predictions(predict_paths, params.get("inputs"))
    keep = kept_replicas(pred["diverged"], pred["replicas"], params["name"], params["on_diverged"], log.warning)
    if not keep.all():
        raise InputError(
            f"{params['name']}: diverged runs, excluded (metrics.on_diverged: exclude), leave "
            "holes in the factorial design; every cell needs its run"
        )
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
            rows.append(
                {"design": params["name"], "metric": metric, "effect": effect, "df": len(cells) - 1, "component": value}
            )
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
def paper_comparison(expected_path, diversity_path, mitigation_path, csv_path, md_path, log_path=None) -> None:
    """A run's diversity (and mitigation) rows beside paper/expected.csv, converted to the
    paper's conventions (nondet.analysis.paper)."""
    import pandas as pd

    from nondet.analysis.paper import paper_comparison as compare_rows
    from nondet.analysis.tables import write_table

    log = get_logger(log_path)
    expected = pd.read_csv(expected_path)
    diversity = pd.read_csv(diversity_path)
    mitigation = pd.read_csv(mitigation_path) if mitigation_path else None
    df = compare_rows(expected, diversity, mitigation)
    missing = len(expected) - len(df)
    notes = (
        [
            f"{missing} of the paper's {len(expected)} numbers have no row in this run "
            "(model/condition/method not trained)."
        ]
        if missing
        else []
    )
    write_table(df, csv_path, md_path, notes=notes)
    for line in notes:
        log.warning(line)
    log.info(f"wrote {csv_path} and {md_path} ({len(df)} of {len(expected)} published numbers)")


@stage
def ensembles(predict_paths, out_path, params: dict, log_path=None) -> None:
    """k-model ensembles of one (model, condition)'s replicas (nondet.analysis.ensembles) as HDF5: per k
    a group ``k<k>`` with the ensembles' logits, their members and the table row."""
    from nondet.analysis.ensembles import ensemble_row, ensemble_sizes, make_ensembles

    log = get_logger(log_path)
    pred = load_predictions(predict_paths, params.get("inputs"))
    group = f"{params['model']}/{params['condition']}"
    keep = kept_replicas(pred["diverged"], pred["replicas"], group, params["on_diverged"], log.warning)
    order = np.argsort(pred["replicas"][keep], kind="stable")
    logits, replicas = pred["logits"][keep][order], pred["replicas"][keep][order]
    ks = ensemble_sizes(len(logits))
    if not ks:
        raise InputError(f"{group}: ensembles need >= 2 replicas that did not diverge, have {len(logits)}")
    job = pred["job"]
    prov = h5io.provenance(
        kind="ensembles",
        params=params,
        experiment=job["experiment"],
        data_hash=job["data_hash"],
        spec_hash=h5io.spec_hash(params),
    )
    with h5io.atomic_h5(out_path, prov) as f:
        f.create_dataset("labels", data=pred["labels"])
        for k in ks:
            ens = make_ensembles(logits, k)
            row = {
                "model": params["model"],
                "condition": params["condition"],
                "method": "ensemble",
                "models_averaged": k,
                "train_runs": k,
                "test_passes": k * pred["test_passes"],
                "epochs": job["recipe"]["epochs"],
                **ensemble_row(ens, pred["labels"]),
            }
            g = f.create_group(f"k{k}")
            g.create_dataset("logits", data=ens)
            g.create_dataset("members", data=replicas[: len(ens) * k].reshape(len(ens), k))
            g.attrs["row"] = json.dumps(row)
            log.info(
                f"{group} k={k}: {len(ens)} ensembles, acc {row['acc_mean']:.2f}±{row['acc_sd']:.3f}%, "
                f"disagreement {row['disagreement']:.2f}%"
            )


def load_ensemble_rows(paths, expect=None) -> list[dict]:
    from nondet.io.files import _expectations

    rows = []
    for p, e in zip(paths, _expectations(paths, expect)):
        with h5io.open_input(p, "ensembles", e) as f:
            rows += sorted(
                (json.loads(f[g].attrs["row"]) for g in f if g.startswith("k")), key=lambda r: r["models_averaged"]
            )
    return rows


@stage
def ensemble_table(
    ensemble_paths, mitigation_paths, csv_path, md_path, pdf_path, png_path, log_path=None, expect=None, plugins=()
):
    """k-model ensembles beside the one-run methods (snapshot ensembles, TTA, EMA, SWA): table and
    figure of SD of accuracy, disagreement between ensembles and accuracy against the cost
    (``plugins``: the modules registering plug-in methods, mitigation.plugins)."""
    load_plugins(plugins)
    import pandas as pd

    from nondet.analysis.plots import ensembles_figure
    from nondet.analysis.tables import write_table

    log = get_logger(log_path)
    h5io.check_same_experiment(list(ensemble_paths) + list(mitigation_paths), "data_hash")
    rows = load_ensemble_rows(ensemble_paths, expect)
    for r in load_rows(mitigation_paths, expect):
        if r["method"] == "plain":  # the k = 1 row
            continue
        rows.append(
            {
                "model": r["model"],
                "condition": r["condition"],
                "method": r["method"],
                "models_averaged": Method.parse(r["method"]).plugin.members(r),
                "train_runs": 1,
                "test_passes": r["test_passes"],
                "epochs": r["epochs"],
                "n_ensembles": r["n_replicas"],
                **{k: r[k] for k in ("acc_mean", "acc_sd", "ce_mean", "ce_sd", "disagreement")},
            }
        )
    columns = [
        "model",
        "condition",
        "method",
        "models_averaged",
        "train_runs",
        "test_passes",
        "epochs",
        "n_ensembles",
        "acc_mean",
        "acc_sd",
        "ce_mean",
        "ce_sd",
        "disagreement",
    ]
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
    write_table(df, csv_path, md_path, notes=notes, reader="ensembles")
    ensembles_figure(df, pdf_path, png_path)
    for line in notes:
        log.info(line)
    log.info(f"wrote {csv_path}, {md_path} and figures ({len(df)} rows)")


# --- imported runs (rules/runs.smk) ------------------------------------------------------------


@stage
def import_runs(out_path, group: str, params: dict, log_path=None) -> None:
    """Rule import_runs: one group of runs -> a predictions HDF5 like the predict stage's."""
    log = get_logger(log_path)
    import_group(params["spec"], group, out_path, params["experiment"], log=log.info)


def _per_example_groups(paths: dict, on_diverged: str, log) -> tuple[dict, dict, np.ndarray]:
    """name -> per-example values (of the runs kept by the diverged-replica policy), name ->
    predictions; all groups on the same test set."""
    from nondet.analysis.variance import per_example_values
    from nondet.io.files import load_predictions

    preds = {name: load_predictions([p]) for name, p in paths.items()}
    first = next(iter(preds))
    ref = preds[first]["labels"]
    for name, pred in preds.items():
        if pred["labels"].shape != ref.shape or not np.array_equal(pred["labels"], ref):
            raise RunsError(
                f"groups {first!r} and {name!r} were scored on different test sets (labels "
                f"checksum {array_checksum(ref)[:12]} != {array_checksum(pred['labels'])[:12]}): "
                "comparisons need the same examples in the same order"
            )
    values = {}
    for name, p in preds.items():
        keep = kept_replicas(p["diverged"], p["replicas"], name, on_diverged, log)
        values[name] = per_example_values(p["logits"][keep], p["labels"])
    return values, preds, ref


def seed_pairs(meta_candidate: list[dict], meta_baseline: list[dict], column: str, log=print):
    """(candidate row, baseline row) of runs sharing a value of metadata ``column``."""
    keys = {}
    for arm, meta in (("candidate", meta_candidate), ("baseline", meta_baseline)):
        values = []
        for i, row in enumerate(meta):
            if column not in row or row[column] in ("", None):
                raise RunsError(f"paired_by {column!r}: run {i} of the {arm} has no value in its metadata")
            values.append(row[column])
        if len(set(values)) != len(values):
            raise RunsError(f"paired_by {column!r}: values repeat within the {arm} ({values})")
        keys[arm] = {v: i for i, v in enumerate(values)}
    common = [v for v in keys["candidate"] if v in keys["baseline"]]
    dropped = sorted(set(keys["candidate"]) ^ set(keys["baseline"]))
    if dropped:
        log(f"paired_by {column!r}: {len(dropped)} run(s) without a partner left out of the paired tests: {dropped}")
    if len(common) < 2:
        raise RunsError(f"paired_by {column!r}: {len(common)} pair(s) of runs share a value; need >= 2")
    return [(keys["candidate"][v], keys["baseline"][v]) for v in common]


@stage
def runs_all_pairs(paths: dict, csv_path, params: dict, log_path=None) -> None:
    """Rule runs_all_pairs: every pair of groups on every metric, Holm-corrected."""
    import pandas as pd

    from nondet.analysis.inference import all_pairs

    log = get_logger(log_path)
    values, _, _ = _per_example_groups(paths, params["on_diverged"], log.warning)
    rows = all_pairs(values, params["alpha"])
    with atomic_path(csv_path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    log.info(f"wrote {csv_path}: {len(rows)} rows for {len(paths)} groups")
