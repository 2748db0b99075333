"""Bring your own runs: reading prediction files, validation messages, the imported HDF5."""

import csv
import hashlib
import json
import os
import re
import subprocess
import sys

import h5py
import helpers
import numpy as np
import pytest
from scipy import special

from nondet.analysis.metrics import accuracy, cross_entropy
from nondet.analysis.variance import per_example_values
from nondet.io.files import load_predictions
from nondet.io.h5io import InputError
from nondet.io.runs import RunsError, export, import_group, load_group, run_metadata
from nondet.workflow.compare_stages import seed_pairs

N, K = 50, 4


def make_runs(m=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, N)
    logits = rng.normal(0, 1, (m, N, K)).astype(np.float32)
    logits[:, np.arange(N), labels] += 1.0
    return logits, labels


def write_npy(tmp_path, logits, labels, name="g"):
    d = tmp_path / name
    d.mkdir(parents=True)
    for i, z in enumerate(logits):
        np.save(d / f"run{i}.npy", z)
    np.save(tmp_path / "labels.npy", labels)
    return {"predictions": str(d / "*.npy"), "labels": str(tmp_path / "labels.npy")}


@pytest.mark.slow
def test_npy_group_round_trips_into_pipeline_predictions(tmp_path):
    logits, labels = make_runs()
    spec = write_npy(tmp_path, logits, labels)
    out = tmp_path / "out.h5"
    import_group(spec, "g", out, "byo", log=lambda *_: None)
    pred = load_predictions([out])  # the reader of the metrics stage
    np.testing.assert_array_equal(pred["logits"], logits)
    np.testing.assert_array_equal(pred["features"], logits)  # no features given: CKA on logits
    np.testing.assert_array_equal(pred["labels"], labels)
    assert pred["cka_on"] == "logits" and list(pred["replicas"]) == [0, 1, 2]
    assert not pred["diverged"].any() and pred["kernels_mode"] == "imported"
    with h5py.File(out) as f:
        prov = json.loads(f.attrs["provenance"])
    for i, src in enumerate(prov["sources"]):
        assert src["file"].endswith(f"run{i}.npy")
        assert src["sha256"] == hashlib.sha256(open(src["file"], "rb").read()).hexdigest()
    assert prov["labels"]["file_sha256"] == hashlib.sha256(open(spec["labels"], "rb").read()).hexdigest()
    assert prov["data_hash"].startswith("labels:")


def test_container_formats_give_the_same_runs(tmp_path):
    torch = pytest.importorskip("torch")
    logits, labels = make_runs()
    ref = load_group(write_npy(tmp_path, logits, labels), "npy")
    for i, z in enumerate(logits):
        np.savez(tmp_path / f"r{i}.npz", scores=z, labels=labels)
        with h5py.File(tmp_path / f"r{i}.h5", "w") as f:
            f["out/logits"] = z  # not at the root: needs no key lookup to fail
            f["logits"] = z
            f["labels"] = labels
        torch.save({"logits": torch.from_numpy(z), "labels": torch.from_numpy(labels)}, tmp_path / f"r{i}.pt")
    np.save(tmp_path / "stacked.npy", logits)  # (runs, examples, classes) in one file
    for spec in (
        {"predictions": str(tmp_path / "r*.npz"), "key": "scores"},  # labels from the files
        {"predictions": str(tmp_path / "r*.h5")},
        {"predictions": str(tmp_path / "r*.pt")},
        {"predictions": str(tmp_path / "stacked.npy"), "labels": str(tmp_path / "labels.npy")},
    ):
        g = load_group(spec, "x")
        np.testing.assert_array_equal(g["logits"], ref["logits"])
        np.testing.assert_array_equal(g["labels"], labels)
    assert [s["index"] for s in g["sources"]] == [0, 1, 2]


def test_probabilities_become_logits_with_the_same_metrics(tmp_path):
    logits, labels = make_runs()
    probs = special.softmax(logits.astype(np.float64), axis=-1)
    spec = write_npy(tmp_path, probs, labels)
    g = load_group({**spec, "kind": "probabilities"}, "p")
    np.testing.assert_array_equal(accuracy(g["logits"], labels), accuracy(logits, labels))
    np.testing.assert_allclose(cross_entropy(g["logits"], labels), cross_entropy(logits, labels), rtol=1e-5)
    # a probability of 0 is clipped, not -inf
    probs[0, 0] = 0.0
    probs[0, 0, labels[0]] = 1.0 - probs[0, 0].sum() + probs[0, 0, labels[0]]
    np.save(tmp_path / "g" / "run0.npy", probs[0])
    assert np.isfinite(load_group({**spec, "kind": "probabilities"}, "p")["logits"]).all()


def bad(tmp_path, mutate, **extra):
    logits, labels = make_runs()
    logits, labels = mutate(logits.astype(np.float64), labels)
    spec = write_npy(tmp_path, logits, labels)
    with pytest.raises(RunsError) as e:
        load_group({**spec, **extra}, "grp")
    return str(e.value)


def test_no_file_matches_the_glob(tmp_path):
    with pytest.raises(RunsError, match=r"runs.groups.grp.predictions: no file matches .*nothing"):
        load_group({"predictions": str(tmp_path / "nothing*.npy")}, "grp")


def test_bad_inputs_fail_with_a_message_naming_the_problem(tmp_path):
    def nan(z, y):
        z[1, 7, 2] = np.nan
        return z, y

    assert "run1.npy: 1 NaN/inf value(s) in 1 example(s) (first: example 7)" in bad(tmp_path / "a", nan)

    def inf(z, y):
        z[0, 3, 0] = np.inf
        return z, y

    assert "NaN/inf" in bad(tmp_path / "b", inf)
    msg = bad(tmp_path / "c", lambda z, y: (special.softmax(z, -1) * 0.9, y), kind="probabilities")
    assert re.search(r"run0.npy: probabilities do not sum to 1 \(example \d+ sums to 0.9;", msg)
    msg = bad(tmp_path / "d", lambda z, y: (z, y), kind="probabilities")
    assert "kind is probabilities but values lie in" in msg and "set kind: logits" in msg
    assert "at least 2 runs" in bad(tmp_path / "e", lambda z, y: (z[:1], y))

    def out_of_range(z, y):
        y = y.copy()
        y[5] = K
        return z, y

    assert f"label(s) out of range [0, {K})" in bad(tmp_path / "f", out_of_range)
    assert "example 5 has label 4" in bad(tmp_path / "g", out_of_range)
    assert "50 labels but the runs have 49 examples" in bad(tmp_path / "h", lambda z, y: (z[:, :-1], y))
    assert "labels must be integers" in bad(tmp_path / "i", lambda z, y: (z, y + 0.5))


def test_runs_of_different_shapes_or_example_order(tmp_path):
    logits, labels = make_runs()
    spec = write_npy(tmp_path, logits, labels)
    np.save(tmp_path / "g" / "run2.npy", logits[2, :-1])
    with pytest.raises(RunsError, match=r"run2.npy: shape .* = \(49, 4\) differs from .*run0.npy's \(50, 4\)"):
        load_group(spec, "g")
    # labels stored with each run: a run whose examples are in another order is caught
    for i, z in enumerate(logits):
        perm = np.roll(np.arange(N), 1) if i == 1 else np.arange(N)
        np.savez(tmp_path / f"r{i}.npz", logits=z[perm], labels=labels[perm])
    with pytest.raises(RunsError, match=r"r1.npz: its labels differ from .*r0.npz's .*example order"):
        load_group({"predictions": str(tmp_path / "r*.npz")}, "g")
    with pytest.raises(RunsError, match=r"r1.npz: its labels differ from .*labels.npy's"):
        load_group({"predictions": str(tmp_path / "r*.npz"), "labels": spec["labels"]}, "g")


def test_ambiguous_or_unsafe_files(tmp_path):
    torch = pytest.importorskip("torch")
    logits, labels = make_runs()
    for i, z in enumerate(logits):
        np.savez(tmp_path / f"r{i}.npz", a=z, b=z)
    np.save(tmp_path / "labels.npy", labels)
    with pytest.raises(RunsError, match=r"holds several arrays \(a, b\); say which with key"):
        load_group({"predictions": str(tmp_path / "r*.npz"), "labels": str(tmp_path / "labels.npy")}, "g")
    with pytest.raises(RunsError, match="labels: file nowhere.npy does not exist"):
        load_group({"predictions": str(tmp_path / "r*.npz"), "labels": "nowhere.npy"}, "g")
    with pytest.raises(RunsError, match=r"no array 'c' \(it holds: a, b\)"):
        load_group({"predictions": str(tmp_path / "r*.npz"), "key": "c", "labels": str(tmp_path / "labels.npy")}, "g")
    with pytest.raises(RunsError, match="no labels: give labels"):
        load_group({"predictions": str(tmp_path / "r*.npz"), "key": "a"}, "g")
    torch.save({"logits": torch.zeros(N, K), "obj": np.random.default_rng(0)}, tmp_path / "p0.pt")
    torch.save({"logits": torch.zeros(N, K)}, tmp_path / "p1.pt")
    with pytest.raises(RunsError, match=r"p0.pt: cannot read as pt \(UnpicklingError"):
        load_group({"predictions": str(tmp_path / "p*.pt"), "labels": str(tmp_path / "labels.npy")}, "g")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(RunsError, match=r"unknown file type '.csv'"):
        load_group({"predictions": str(tmp_path / "x.csv")}, "g")


@pytest.mark.slow
def test_metadata_is_matched_by_file_name_and_pairs_runs(tmp_path):
    logits, labels = make_runs(m=4)
    spec = write_npy(tmp_path, logits, labels)
    meta = tmp_path / "meta.csv"
    meta.write_text("file,seed,lr\nrun0.npy,7,0.1\nrun1.npy,3,0.1\nrun2.npy,5,0.1\nrun3.npy,9,0.1\n")
    out = tmp_path / "g.h5"
    import_group({**spec, "metadata": str(meta)}, "g", out, log=lambda *_: None)
    rows = run_metadata(out)
    assert [r["seed"] for r in rows] == ["7", "3", "5", "9"]
    other = [{"seed": s} for s in ("3", "9", "1")]
    notes = []
    assert seed_pairs(rows, other, "seed", notes.append) == [(1, 0), (3, 1)]
    assert "3 run(s) without a partner" in notes[0]
    with pytest.raises(RunsError, match="1 pair"):
        seed_pairs(rows, [{"seed": "3"}], "seed", notes.append)
    with pytest.raises(RunsError, match="values repeat within the baseline"):
        seed_pairs(rows, [{"seed": "3"}, {"seed": "3"}], "seed")
    meta.write_text("file,seed\nrun0.npy,7\n")
    with pytest.raises(RunsError, match=r"no metadata row for run file .*run1.npy"):
        load_group({**spec, "metadata": str(meta)}, "g")


@pytest.mark.slow
def test_features_and_export_round_trip(tmp_path):
    logits, labels = make_runs()
    spec = write_npy(tmp_path, logits, labels)
    feats = np.random.default_rng(1).normal(size=(3, N, 6)).astype(np.float32)
    (tmp_path / "f").mkdir()
    for i, h in enumerate(feats):
        np.save(tmp_path / "f" / f"run{i}.npy", h)
    out = tmp_path / "g.h5"
    import_group({**spec, "features": str(tmp_path / "f/*.npy")}, "g", out, log=lambda *_: None)
    pred = load_predictions([out])
    np.testing.assert_array_equal(pred["features"], feats)
    assert pred["cka_on"] == "features"
    with pytest.raises(RunsError, match="2 feature files for 3 runs"):
        (tmp_path / "f" / "run2.npy").unlink()
        load_group({**spec, "features": str(tmp_path / "f/*.npy")}, "g")
    files = export([out], tmp_path / "exported")
    again = load_group(
        {
            "predictions": str(tmp_path / "exported/run_*.npy"),
            "labels": str(tmp_path / "exported/labels.npy"),
            "features": str(tmp_path / "exported/features/*.npy"),
        },
        "e",
    )
    assert len(files) == 3
    np.testing.assert_array_equal(again["logits"], logits)
    np.testing.assert_array_equal(again["features"], feats)


def test_per_example_values_of_imported_runs_match_the_metrics(tmp_path):
    logits, labels = make_runs()
    g = load_group(write_npy(tmp_path, logits, labels), "g")
    pe = per_example_values(g["logits"], g["labels"])
    np.testing.assert_allclose(pe["accuracy"].mean(1), accuracy(logits, labels))
    np.testing.assert_allclose(pe["cross_entropy"].mean(1), cross_entropy(logits, labels), rtol=1e-12)


# --- the workflow: trained runs exported as .npy and analysed through runs: ---------------------

from helpers import REPO  # noqa: E402
from shared_run import TINY  # noqa: E402

TRAINED = {
    "experiment": "tiny",
    "replicas": 3,
    "replicas_per_job": 2,
    "dataset": {"num_samples": 600},
    "training": {"epochs": 2, "batch_size": 64, "eval_every": 0},
    "models": {
        "cnn": {"arch": "cnn1d", "params": {"channels": 8}, "conditions": ["init", "all"]},
        "linear": {"arch": "linear", "conditions": ["shuffle"]},
    },
    "metrics": {"bootstrap_resamples": 200},
}
#: Columns that describe where runs came from, not what they measured.
ORIGIN = {
    "device",
    "kernels_mode",
    "epochs",
    "cycles",
    "method",
    "test_passes",
    "cka_on",
    # how replicas were packed into jobs (trained: chunks; imported: one group)
    "pairs_within_jobs",
    "identical_within_jobs",
    "pairs_across_jobs",
    "identical_across_jobs",
}


def snakemake(workdir, config, *args):
    return helpers.snakemake(workdir, "--cores", "2", *args, config=config)


#: The shared TINY run's groups exported (tests/shared_run.py): a group is named by its condition,
#: so linear's `control` and cnn's and mlp's `bitflip` (second groups of those names) stay out.
EXPORTED = {("cnn", "control"), ("cnn", "dropout"), ("cnn", "all"), ("linear", "bitflip")}


@pytest.mark.slow
def test_exported_runs_give_the_same_diversity_table(tiny_run, tmp_path):
    trained, imported = tiny_run, tmp_path / "imported"  # trained: read-only, only exported from
    imported.mkdir()
    groups = {}
    for model, condition in sorted(EXPORTED):
        files = sorted(str(p) for p in (trained / f"results/predict/{model}/{condition}").glob("chunk*.h5"))
        out = imported / "exports" / condition
        subprocess.run(
            [sys.executable, "-m", "nondet", "export-runs", *files, "--out", str(out)],
            check=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        groups[condition] = {
            "model": model,
            "predictions": f"exports/{condition}/run_*.npy",
            "labels": f"exports/{condition}/labels.npy",
            "features": f"exports/{condition}/features/*.npy",
            "metadata": f"exports/{condition}/metadata.csv",
        }
    config = {
        "experiment": "byo",
        "models": {},  # analysis only: nothing is trained
        "metrics": TINY["metrics"],
        "runs": {
            "groups": groups,
            "comparisons": {"dropout_vs_all": {"baseline": "dropout", "candidate": "all", "paired_by": "replica"}},
            "all_pairs": True,
        },
    }
    out = snakemake(imported, config)
    assert "rule train" not in out.stderr and "rule predict:" not in out.stderr
    read = lambda p: {(r["model"], r["condition"]): r for r in csv.DictReader(open(p))}  # noqa: E731
    a, b = read(trained / "results/tables/diversity.csv"), read(imported / "results/tables/diversity.csv")
    assert set(b) == EXPORTED and set(a) == EXPORTED | {("linear", "control"), ("cnn", "bitflip"), ("mlp", "bitflip")}
    a = {key: a[key] for key in EXPORTED}
    metric_columns = [c for c in next(iter(a.values())) if c not in ORIGIN | {"model", "condition", "n_absorbed"}]
    assert {"acc_mean", "disagreement_se", "cka", "acc_var_indep"} <= set(metric_columns)
    for key in EXPORTED:
        assert {c: a[key][c] for c in metric_columns} == {c: b[key][c] for c in metric_columns}, key
        # absorbed one-ulp flips are counted from the trained weights, which exports do not carry
        assert (a[key]["n_absorbed"] != "") == (key == ("linear", "bitflip")) and b[key]["n_absorbed"] == ""
        assert b[key]["cka_on"] == "features" and b[key]["device"] == "imported"
    res = imported / "results"
    for path in (
        "figures/diversity_cnn.png",
        "figures/diversity_linear.png",
        "runs/compare/dropout_vs_all/summary.png",
    ):
        assert (res / path).stat().st_size > 0, path
    summary = list(csv.DictReader(open(res / "runs/compare/dropout_vs_all/summary.csv")))
    assert {r["test"] for r in summary} == {
        "welch",
        "permutation",
        "paired_runs",
        "joint_paired",
        "joint_unpaired",
        "p_better",
        "fixes",
        "regressions",
    }
    welch = next(r for r in summary if r["test"] == "welch" and r["metric"] == "accuracy")
    assert float(welch["estimate"]) == pytest.approx(
        float(a[("cnn", "all")]["acc_mean"]) - float(a[("cnn", "dropout")]["acc_mean"])
    )
    plan = list(csv.DictReader(open(res / "runs/compare/dropout_vs_all/plan.csv")))
    assert {r["basis"] for r in plan} == {"pilot_sd", "indep_only", "distribution", "p_better"}
    assert {r["effect_is"] for r in plan if r["basis"] == "pilot_sd"} == {"observed (post hoc)"}
    verdict = {r["metric"]: r for r in csv.DictReader(open(res / "runs/compare/dropout_vs_all/verdict.csv"))}
    assert verdict["accuracy"]["diff_test"] == "paired_runs" and verdict["accuracy"]["decision"]
    assert "imported runs" in verdict["accuracy"]["held_fixed"]
    assert "P(candidate better)" in (res / "runs/compare/dropout_vs_all/verdict.md").read_text()
    pairs = len(EXPORTED) * (len(EXPORTED) - 1) // 2  # of groups
    assert len(list(csv.DictReader(open(res / "runs/all_pairs.csv")))) == pairs * 2 * 3  # metrics, tests


def test_runs_config_errors_name_the_key():
    from nondet.workflow.config import ConfigError, validate

    group = {"predictions": "x/*.npy", "labels": "y.npy"}
    ok = {"models": {}, "runs": {"groups": {"a": group, "b": group}}}
    cfg = validate(ok)
    assert cfg["runs"]["groups"]["a"]["kind"] == "logits" and cfg["runs"]["groups"]["a"]["model"] == "runs"
    cases = [
        ({"models": {}}, "no models to train and no runs.groups"),
        (
            {**ok, "runs": {**ok["runs"], "comparisons": {"c": {"baseline": "a", "candidate": "zz"}}}},
            "runs.comparisons.c.candidate: unknown group 'zz'",
        ),
        (
            {**ok, "runs": {**ok["runs"], "comparisons": {"c": {"baseline": "a", "candidate": "a"}}}},
            "runs.comparisons.c: baseline and candidate are the same group",
        ),
        (
            {
                **ok,
                "runs": {**ok["runs"], "comparisons": {"c": {"baseline": "a", "candidate": "b", "paired_by": "seed"}}},
            },
            "runs.comparisons.c.paired_by: group 'a' has no metadata",
        ),
        (
            {
                "models": {"cnn": {"arch": "cnn1d", "conditions": ["init"]}},
                "runs": {"groups": {"a": {**group, "model": "cnn"}}},
            },
            "runs.groups.a.model: 'cnn' is a model the pipeline trains",
        ),
        (
            {"models": {}, "runs": {"groups": {"a": group}, "all_pairs": True}},
            "runs.all_pairs: needs at least 2 groups",
        ),
        ({"models": {}, "runs": {"groups": {"a": {**group, "kind": "probs"}}}}, "runs.groups.a.kind"),
        ({"models": {}, "runs": {"groups": {"a b": group}}}, "runs.groups"),
        ({"models": {}, "runs": {"groups": {"a": {"labels": "y.npy"}}}}, "'predictions' is a required property"),
    ]
    for config, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            validate(config)


@pytest.mark.slow
def test_compare_stage_outputs_and_different_test_sets(tmp_path):
    """The one comparison stage (nondet.workflow.compare_stages.compare) on imported groups."""
    from nondet.workflow.compare_stages import compare, runs_all_pairs

    logits, labels = make_runs(m=4)
    paths = {}
    for name, shift in (("base", 0.0), ("cand", 0.5)):
        spec = write_npy(tmp_path / name, logits + shift * np.eye(K)[labels], labels)
        meta = tmp_path / name / "meta.csv"
        meta.write_text("file,seed\n" + "".join(f"run{i}.npy,{i}\n" for i in range(4)))
        paths[name] = tmp_path / f"{name}.h5"
        import_group({**spec, "metadata": str(meta)}, name, paths[name], log=lambda *_: None)
    params = {
        "name": "c",
        "baseline": "base",
        "candidate": "cand",
        "paired_by": "seed",
        "alpha": 0.05,
        "power": 0.8,
        "effect": {},
        "gamma": 0.75,
        "margin": {"accuracy": 5.0},
        "margin_kind": "equivalence",
        "held_fixed": "imported runs",
        "on_diverged": "exclude",
    }
    out = {k: tmp_path / f"c.{k}" for k in ("csv", "verdict", "md", "plan", "pdf", "png")}
    compare([paths["base"]], [paths["cand"]], out, params)
    import pandas as pd

    summary, plan, verdict = pd.read_csv(out["csv"]), pd.read_csv(out["plan"]), pd.read_csv(out["verdict"])
    acc = summary[(summary.metric == "accuracy") & (summary.test == "paired_runs")].iloc[0]
    g = {n: load_predictions([p]) for n, p in paths.items()}
    assert acc.estimate == pytest.approx(
        (accuracy(g["cand"]["logits"], labels) - accuracy(g["base"]["logits"], labels)).mean()
    )
    assert "tost" in set(summary.test) and verdict.set_index("metric").loc["accuracy", "equivalence"]
    assert set(plan.basis) == {"pilot_sd", "indep_only", "distribution", "p_better", "tost"}
    assert out["png"].stat().st_size > 0 and "comparison c" in out["md"].read_text().lower()
    # a group scored on other examples (another order) cannot be compared
    perm = np.roll(np.arange(N), 3)
    other = write_npy(tmp_path / "other", logits[:, perm], labels[perm])
    import_group(other, "other", tmp_path / "other.h5", log=lambda *_: None)
    with pytest.raises(
        InputError, match=r"'base' \(.*\) and 'other' \(.*other.h5.*\) were scored on different test sets"
    ):
        runs_all_pairs(
            {"base": paths["base"], "other": tmp_path / "other.h5"},
            tmp_path / "p.csv",
            {"alpha": 0.05, "on_diverged": "exclude"},
        )
    with pytest.raises(InputError, match="different test sets"):
        compare([paths["base"]], [tmp_path / "other.h5"], out, {**params, "paired_by": None})


@pytest.mark.slow
def test_trained_models_and_imported_runs_in_one_config_plan_without_ambiguity(tmp_path):
    """Both kinds of groups in one config: a dry run plans training for the models and only an
    import for the runs, and their rows meet in one diversity table."""
    logits, labels = make_runs()
    write_npy(tmp_path, logits, labels, name="mine")
    config = {**TRAINED, "runs": {"groups": {"mine": {"predictions": "mine/*.npy", "labels": "labels.npy"}}}}
    out = snakemake(tmp_path, config, "-n")
    planned = set(re.findall(r"^\s+output: (.*)$", out.stdout + out.stderr, re.M))
    assert "results/predict/runs/mine/chunk0.h5" in planned
    assert "results/metrics/runs/mine.h5" in planned and "results/metrics/cnn/init.h5" in planned
    assert "results/train/cnn/init/chunk0.h5" in planned
    assert not any("train/runs" in p for p in planned)
    assert "results/figures/diversity_runs.pdf, results/figures/diversity_runs.png" in planned


def test_comparisons_refused_before_any_job(tmp_path):
    """One run in a group, or groups with different label files: refused when the comparison's
    params are made (planning), naming the config key."""
    from nondet.workflow.config import validate
    from nondet.workflow.runs import check_comparison

    logits, labels = make_runs(m=3)
    one = write_npy(tmp_path / "one", logits[:1], labels)
    two = write_npy(tmp_path / "two", logits, labels)
    other = write_npy(tmp_path / "other", logits, np.roll(labels, 1))
    groups = {"one": one, "two": two, "other": other}
    comparisons = {"a": {"baseline": "two", "candidate": "one"}, "b": {"baseline": "two", "candidate": "other"}}
    config = validate({"models": {}, "runs": {"groups": groups, "comparisons": comparisons}})
    with pytest.raises(RunsError, match=r"runs.comparisons.a.candidate: group 'one' holds 1 run"):
        check_comparison(config, "a")
    with pytest.raises(RunsError, match=r"runs.comparisons.b: groups 'two' and 'other' have different test labels"):
        check_comparison(config, "b")
    config["runs"]["groups"]["other"]["labels"] = two["labels"]
    check_comparison(config, "b")  # same labels: fine


@pytest.mark.slow
def test_a_replaced_run_file_with_an_older_date_reimports_its_group(tmp_path):
    """cp -p / rsync -a / tar keep dates: a run file replaced by another one dated before the
    import is found by its content at planning, and only its group is imported again."""
    logits, labels = make_runs()
    write_npy(tmp_path, logits, labels, name="a")
    write_npy(tmp_path / "b_root", logits[:, ::-1].copy(), labels, name="b")
    groups = {
        "a": {"predictions": "a/*.npy", "labels": "labels.npy"},
        "b": {"predictions": "b_root/b/*.npy", "labels": "b_root/labels.npy"},
    }
    config = {"models": {}, "runs": {"groups": groups}, "metrics": {"bootstrap_resamples": 20}}
    snakemake(tmp_path, config, "results/tables/diversity.csv")
    assert not helpers.planned_outputs(snakemake(tmp_path, config, "-n", "results/tables/diversity.csv"))
    run = tmp_path / "a" / "run1.npy"
    old = os.stat(run).st_mtime - 3600
    np.save(run, logits[0] + 1.0)  # other predictions, as a copy that kept its date would bring
    os.utime(run, (old, old))
    planned = helpers.planned_outputs(snakemake(tmp_path, config, "-n", "results/tables/diversity.csv"))
    assert "results/predict/runs/a/chunk0.h5" in planned and "results/metrics/runs/a.h5" in planned
    assert "results/predict/runs/b/chunk0.h5" not in planned


def test_group_content_hashes_every_file_of_a_group(tmp_path):
    from nondet.workflow.config import validate
    from nondet.workflow.runs import group_content

    logits, labels = make_runs()
    spec = write_npy(tmp_path, logits, labels)
    config = validate({"models": {}, "runs": {"groups": {"g": spec}}})
    before = group_content(config, "g")
    assert set(before) == {*(str(tmp_path / "g" / f"run{i}.npy") for i in range(3)), spec["labels"]}
    run = tmp_path / "g" / "run0.npy"
    st = os.stat(run)
    np.save(run, logits[0] * 2)
    os.utime(run, ns=(st.st_atime_ns, st.st_mtime_ns))  # same date
    after = group_content(config, "g")
    assert after[str(run)] != before[str(run)]
    assert {k: v for k, v in after.items() if k != str(run)} == {k: v for k, v in before.items() if k != str(run)}


def test_a_glob_matching_a_link_to_a_system_file_names_the_target_and_no_unsafe_hint(tmp_path):
    from nondet.io.runs import read_array

    target = "/etc/hostname" if os.path.isfile("/etc/hostname") else "/etc/passwd"
    (tmp_path / "run9.npy").symlink_to(target)
    with pytest.raises(RunsError) as e:
        read_array(tmp_path / "run9.npy")
    text = str(e.value)
    assert f"a link to {os.path.realpath(target)}, which is not a npy prediction file" in text
    assert "allow_pickle=True" not in text and "narrow the glob" in text


def test_paired_by_naming_a_missing_column_is_refused_at_planning(tmp_path):
    from nondet.workflow.config import validate
    from nondet.workflow.runs import check_comparison

    logits, labels = make_runs(m=3)
    groups = {}
    for name in ("x", "y"):
        spec = write_npy(tmp_path / name, logits, labels)
        meta = tmp_path / name / "meta.csv"
        meta.write_text("file,seed\n" + "".join(f"run{i}.npy,{i}\n" for i in range(3)))
        groups[name] = {**spec, "metadata": str(meta)}
    comparisons = {"c": {"baseline": "x", "candidate": "y", "paired_by": "sede"}}
    config = validate({"models": {}, "runs": {"groups": groups, "comparisons": comparisons}})
    with pytest.raises(
        RunsError, match=r"runs.comparisons.c.paired_by: column 'sede' is not in .*meta.csv .*columns: file, seed"
    ):
        check_comparison(config, "c")
    config["runs"]["comparisons"]["c"]["paired_by"] = "seed"
    check_comparison(config, "c")
