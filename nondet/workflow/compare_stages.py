"""The comparison stages (rules in envs/analysis.yaml, no torch): two arms compared by the
verdict engine (compare, runs_compare), variance components over a factorial design of seeds
(factorial), and imported runs (import_runs, runs_all_pairs). The tables, figures, ensembles
and the data set are in nondet.workflow.analysis_stages. pandas and the figure code are imported
by the stages that use them."""

from __future__ import annotations

import numpy as np

from nondet.analysis.arms import per_example_arms
from nondet.analysis.metrics import accuracy, cross_entropy
from nondet.analysis.variance import per_example_split, per_example_values, variance_components
from nondet.io import h5io
from nondet.io.files import kept_replicas, load_predictions
from nondet.io.h5io import InputError, atomic_path
from nondet.io.runs import RunsError, import_group
from nondet.workflow.runtime import get_logger, stage


@stage
def compare(baseline_paths, candidate_paths, out: dict, params: dict, log_path=None) -> None:
    """Rules compare (trained arms) and runs_compare (imported groups): every test of the
    verdict engine (nondet.analysis.inference) on accuracy and cross-entropy, the verdict, the plan and
    the figure. ``out``: paths csv (every test), verdict (one row per metric), md (the verdict
    in words), plan, pdf, png."""
    import pandas as pd

    from nondet.analysis import inference, planning
    from nondet.analysis.plots import comparison_figure
    from nondet.analysis.verdict import verdict, verdict_lines, verdict_markdown

    log = get_logger(log_path)
    paths = {"baseline": list(baseline_paths), "candidate": list(candidate_paths)}
    values, names = per_example_arms(paths, params["on_diverged"], log.warning, params.get("inputs"))
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
    with h5io.atomic_path(out["md"]) as tmp, open(tmp, "w") as f:
        f.write(verdict_markdown(name, params["baseline"], params["candidate"], lines, out["csv"], out["plan"]))
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


# --- imported runs (rules/runs.smk) ------------------------------------------------------------


@stage
def import_runs(out_path, group: str, params: dict, log_path=None) -> None:
    """Rule import_runs: one group of runs -> a predictions HDF5 like the predict stage's."""
    log = get_logger(log_path)
    import_group(params["spec"], group, out_path, params["experiment"], log=log.info)


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
    values, _ = per_example_arms({name: [p] for name, p in paths.items()}, params["on_diverged"], log.warning)
    rows = all_pairs(values, params["alpha"])
    with atomic_path(csv_path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    log.info(f"wrote {csv_path}: {len(rows)} rows for {len(paths)} groups")
