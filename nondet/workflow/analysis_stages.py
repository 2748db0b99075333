"""The stages that need no torch and make the run's tables: the data set (the one job every other
job waits for), and the rules in envs/analysis.yaml for pairwise metrics, tables, figures,
provenance, mitigation (also versus training budget) and stability tables, ensembles and the
paper comparison. Comparisons, factorial designs and imported runs are in
nondet.workflow.compare_stages; the domain logic these stages call is in nondet.analysis.
pandas, the table writers and matplotlib are imported by the stages that use them: they cost
about half a second per job, and most jobs here (one per model and condition) draw nothing. So
are the metrics (nondet.analysis.metrics), which import scipy.stats: about 1.2 s of CPU in every
job that imports it, and of the stages here only the metrics need it at once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from nondet.analysis.identical import absorbed_count, identical_pairs, identical_pairs_by_job, measured_kernels_mode
from nondet.io import h5io
from nondet.io.files import kept_replicas, load_divergence, load_predictions, load_rows, write_metrics
from nondet.io.h5io import InputError
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
    from nondet.analysis.metrics import cka_on, summarize

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

    from nondet.analysis.ensembles import ensemble_notes
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
    notes = ensemble_notes(df)
    write_table(df, csv_path, md_path, notes=notes, reader="ensembles")
    ensembles_figure(df, pdf_path, png_path)
    for line in notes:
        log.info(line)
    log.info(f"wrote {csv_path}, {md_path} and figures ({len(df)} rows)")
