"""Snakemake helpers of rules/runs.smk (bring your own runs): paths and params from the validated
config. The file formats, validation, import and export are nondet.io.runs; the stages
(import_runs, runs_all_pairs) are in nondet.workflow.compare_stages."""

from __future__ import annotations

import glob as globlib
import os

import numpy as np

from nondet.io.runs import DEFAULT_LABELS_KEY, RunsError, file_format, match_files, read_array
from nondet.methods import predictions_path as method_predictions_path


def group_inputs(config: dict, group: str) -> dict:
    """Every file a group is read from; a glob matching nothing fails naming the config key."""
    spec = config["runs"]["groups"][group]
    key = f"runs.groups.{group}"
    files = {"predictions": match_files(spec["predictions"], f"config key {key}.predictions")}
    if spec["features"]:
        files["features"] = match_files(spec["features"], f"config key {key}.features")
    for name in ("labels", "metadata"):
        if spec[name]:
            if not os.path.isfile(spec[name]):
                raise RunsError(
                    f"config key {key}.{name}: file {spec[name]!r} does not exist (relative to {os.getcwd()})"
                )
            files[name] = spec[name]
    return files


def group_content(config: dict, group: str) -> dict:
    """SHA-256 of every file a group is read from (rule import_runs's ``content`` param): a file
    replaced by another, whatever its date (``cp -p``, ``rsync -a`` and ``tar`` keep dates),
    reimports its group. Hashes are kept while a file's stat is unchanged (one read per file)."""
    from nondet.io.checksums import file_sha256

    out = {}
    for kind, files in group_inputs(config, group).items():
        for path in [files] if isinstance(files, str) else files:
            out[path] = file_sha256(path)
    return out


def predictions_path(config: dict, group: str) -> str:
    """Where a group is imported: the predict stage's layout, model label / group name."""
    return method_predictions_path("plain", config["runs"]["groups"][group]["model"], group, 0)


def _npy_runs(spec: dict) -> int | None:
    """Runs in a group of .npy prediction files, from their headers (None for other formats)."""
    files = sorted(globlib.glob(spec["predictions"], recursive=True))
    if not files or any(file_format(f, spec["format"]) != "npy" for f in files):
        return None
    shapes = [np.load(f, mmap_mode="r", allow_pickle=False).shape for f in files]
    return sum(1 if len(shape) == 2 else shape[0] for shape in shapes)


def check_comparison(config: dict, name: str) -> None:
    """What a comparison of imported groups can be refused for before any job runs: fewer than 2
    runs in a group of .npy files, or label files of the two groups that differ (other test
    sets). The rest (other formats, labels inside the prediction files) is checked by the
    import and compare jobs, naming the files."""
    spec, groups = config["runs"]["comparisons"][name], config["runs"]["groups"]
    key = f"config key runs.comparisons.{name}"
    labels = {}
    for arm in ("baseline", "candidate"):
        group = groups[spec[arm]]
        if spec.get("paired_by") and group["metadata"] and os.path.isfile(group["metadata"]):
            import csv

            with open(group["metadata"], newline="") as f:
                columns = next(csv.reader(f), [])
            if spec["paired_by"] not in columns:
                raise RunsError(
                    f"{key}.paired_by: column {spec['paired_by']!r} is not in {group['metadata']} "
                    f"(metadata of group {spec[arm]!r}; columns: {', '.join(columns) or 'none'}): "
                    "name one of its columns, or add the column to the file"
                )
        n = _npy_runs(group)
        if n is not None and n < 2:
            raise RunsError(f"{key}.{arm}: group {spec[arm]!r} holds {n} run: a comparison needs >= 2 per arm")
        if group["labels"] and os.path.isfile(group["labels"]):
            labels[arm] = read_array(
                group["labels"], key=group["labels_key"], default=DEFAULT_LABELS_KEY, kind="labels"
            )
    if len(labels) == 2 and (
        labels["baseline"].shape != labels["candidate"].shape
        or not np.array_equal(labels["baseline"], labels["candidate"])
    ):
        raise RunsError(
            f"{key}: groups {spec['baseline']!r} and {spec['candidate']!r} have different test labels "
            f"({groups[spec['baseline']]['labels']} vs {groups[spec['candidate']]['labels']}): comparisons need "
            "the same examples in the same order"
        )


def compare_params(config: dict, name: str, code_version: str) -> dict:
    """Params of rule runs_compare: the verdict engine's, as for trained comparisons (checked
    first by ``check_comparison``)."""
    from nondet.workflow.expect import per_metric

    check_comparison(config, name)
    spec = config["runs"]["comparisons"][name]
    return {
        "name": name,
        **spec,
        "effect": per_metric(spec["effect"]),
        "margin": per_metric(spec["margin"]),
        "on_diverged": config["metrics"]["on_diverged"],
        "held_fixed": HELD_FIXED_IMPORTED,
        "code_version": code_version,
    }


#: What the verdict says of imported runs, whose sources the pipeline cannot see.
HELD_FIXED_IMPORTED = (
    "imported runs: which sources of randomness varied between them is unknown to the pipeline; if "
    "some were held fixed (e.g. only the initialisation seed varied), the intervals are conditional on "
    "them and narrower than those of fully independent runs"
)


def targets(config: dict) -> list[str]:
    """Outputs of the runs section for rule all (the diversity table gets its rows anyway).
    Every group's files are looked up first (group_inputs), so a missing labels or metadata file
    or a glob matching nothing fails while the workflow is planned, naming the config key (in an
    input function, Snakemake would go on to try rule predict and report its KeyError instead)."""
    runs = config["runs"]
    for group in runs["groups"]:
        group_inputs(config, group)
    models = sorted({spec["model"] for spec in runs["groups"].values()})
    out = [f"results/figures/diversity_{m}.{ext}" for m in models for ext in ("pdf", "png")]
    out += [f"results/runs/compare/{n}/verdict.csv" for n in runs["comparisons"]]
    if runs["all_pairs"]:
        out.append("results/runs/all_pairs.csv")
    return out
