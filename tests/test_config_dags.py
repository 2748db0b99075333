"""Every shipped config's DAG runs: at least one job of every rule in it completes.

For config.yaml, examples/config.yaml and every file under configs/ (found by glob, so a new
config is covered without editing this file), the config is reduced to a CPU smoke size (2
replicas, 2 epochs, tiny stand-in data in the real on-disk formats, narrow models, one model per
architecture, one twin per source, one condition per kind, bitflip and dropout on every model
that runs them) with the SAME sections and methods, so that its DAG has every rule of the full
config's DAG (checked). The test runs it and checks that every rule the
dry run of the full config plans was executed. A dry run of the full config alone does not show
that its jobs can run: configs/paper.yaml once planned bitflip jobs of its linear model and MLP
with the ResNets' stem conv as target, which raised at their first step.

A file whose first comment block calls it "standalone" (configs/runs_example.yaml) is run on
its own; every other one is merged over config.yaml, as their headers say. An overlay leaves to
config.yaml's own case what it leaves as config.yaml has it (unless it changes RECIPE_KEYS): the
models, and in a divergence or mitigation section all but what its rules need in the DAG (one
kind of twin; one mitigation method with a training run of its own). A config that another test
file's shared run executes is checked there instead (RUN_ELSEWHERE, a tested mapping), each run
planning the full config's rules and covering its reduction: examples/config.yaml on
tests/test_example.py's run; config.yaml and configs/compare_example.yaml on the session's TINY
run (tests/shared_run.py, checked in tests/test_workflow.py); configs/paper.yaml on
tests/test_cifar.py's paper slice (Table 1's conditions and every TTA set on ResNet-14, plus what
this file's reduction trains beyond them).

Cost (docs/paper-scale.md), CPU = user + sys with children, on the shared 2-core VM at a load
average of 2-5 (2026-12-06): this file with tests/test_example.py 399 s wall, 427 s CPU (before
the trimming and RUN_ELSEWHERE: 467 s, 481 s); config.yaml 99 s CPU, compare_example 67 s,
paper_cpu 55 s, runs_example 23 s. paper.yaml's case (96-104 s CPU, 37 jobs) went into the CIFAR
slice's run (54 jobs, now 71): the two together took 221-258 s of CPU, the one run 184-200 s.
config.yaml's 48 jobs and compare_example's 31 now run in TINY's 87 (was 63). What is left here:
paper_cpu and runs_example.
"""

from __future__ import annotations

import copy
import csv
import gzip
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, default_config, snakemake

from nondet.workflow import config as cfg
from nondet.workflow import plan


def shipped_configs() -> list[Path]:
    return [REPO / "config.yaml", REPO / "examples/config.yaml", *sorted((REPO / "configs").glob("*.yaml"))]


def _header(path: Path) -> str:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines)


def full_config(path: Path) -> dict:
    """The config a user runs with ``path`` (merged over config.yaml unless standalone)."""
    from snakemake.utils import update_config

    if path == REPO / "config.yaml" or "standalone" in _header(path).lower():
        config = cfg.load_yaml(path)
    else:
        config = default_config()
        update_config(config, cfg.load_yaml(path))
    # folders relative to the repository (examples/), for a run in another working folder
    for spec in [config.get("dataset", {}), *(m for m in (config.get("models") or {}).values() if m)]:
        if spec.get("pythonpath") and (REPO / spec["pythonpath"]).is_dir():
            spec["pythonpath"] = str(REPO / spec["pythonpath"])
    return config


# --- stand-ins for the data sets, in their release formats --------------------------------------


def write_tiny_cifar(root: Path, n_train=16, n_test=24, seed=0) -> dict:
    """A tiny CIFAR-10 in the release's pickle format (5 train batches); returns {file: md5}."""
    from test_cifar import write_tiny_cifar as write

    return write(root, n_train, n_test, seed)


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_tiny_idx(root: Path, n_train=60, n_test=40, seed=0) -> dict:
    """A tiny MNIST-format set (the four gzipped idx files); returns {file: MD5 of its bytes}."""
    import hashlib

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    md5 = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 128, (n, 28, 28)) + (y * 12)[:, None, None]
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            name = f"{split}-{kind}-ubyte"
            raw = _idx(arr)
            with gzip.open(root / f"{name}.gz", "wb") as f:
                f.write(raw)
            md5[name] = hashlib.md5(raw).hexdigest()
    return md5


def write_runs(workdir: Path, groups: dict, n_runs=4, n_examples=60, n_classes=10) -> None:
    """Prediction files for each runs.groups entry at the paths its globs name: random logits
    (one .npy per run), labels, features and a metadata CSV (file, replica)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, n_classes, n_examples)  # one test set: groups are compared
    for spec in groups.values():
        files = []
        for i in range(n_runs):
            path = workdir / spec["predictions"].replace("*", str(i))
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, rng.normal(size=(n_examples, n_classes)).astype(np.float32) + 2 * np.eye(n_classes)[labels])
            files.append(path.name)
            if spec.get("features"):
                feat = workdir / spec["features"].replace("*", str(i))
                feat.parent.mkdir(parents=True, exist_ok=True)
                np.save(feat, rng.normal(size=(n_examples, 8)).astype(np.float32))
        np.save(workdir / spec["labels"], labels)
        if spec.get("metadata"):
            with open(workdir / spec["metadata"], "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["file", "replica"])
                w.writerows([name, i] for i, name in enumerate(files))


def stand_in_dataset(dataset: dict, root: Path) -> dict:
    """The config's dataset replaced by a tiny stand-in of the same kind, written under root."""
    name = dataset.get("name", "mnist1d")
    if name == "mnist1d":
        return {**dataset, "num_samples": 300}
    if name == "cifar10":
        md5 = write_tiny_cifar(root / "cifar")
        return {**dataset, "path": str(root / "cifar"), "md5": md5, "download": False}
    if name in ("fashion_mnist", "mnist"):
        md5 = write_tiny_idx(root / "idx")
        return {**dataset, "path": str(root / "idx"), "md5": md5, "download": False, "n_train": 60, "n_test": 40}
    if name == "loader":  # a user's own reader (examples/config.yaml): tests/test_example.py sizes it
        return dataset
    raise AssertionError(f"dataset {name!r}: add a tiny stand-in for it to tests/test_config_dags.py")


# --- the reduction ------------------------------------------------------------------------------

SMALL_PARAMS = {"resnet": {"width": 4}, "cnn1d": {"channels": 8}, "mlp": {"hidden": 16}}


def _named_outside_stability(config: dict, model: str) -> bool:
    sections = [*config["divergence"]["models"], *config["mitigation"]["models"], *config["budget"]["models"]]
    sections += [s["model"] for section in ("comparisons", "factorial") for s in config[section].values()]
    return model in sections


def _keep_models(config: dict) -> list[str]:
    """Every model a section names outside the stability sweep, and one model per architecture
    among the rest (the sweep's depth and width variants run the same rules)."""
    named = {m for m in config["models"] if _named_outside_stability(config, m)}
    keep, archs = [], {config["models"][m]["arch"] for m in named}
    for name, spec in config["models"].items():
        if name in named or spec["arch"] not in archs:
            keep.append(name)
            archs.add(spec["arch"])
    return keep


def condition_kind(config: dict, condition: str) -> str:
    """What a condition exercises: control (bitwise identical replicas), bitflip (the flip and its
    unperturbed twin, per model: its tensor), dropout (per model: its dropout layers) or seeds
    (seed-varying sources and the kernels stand-in, one code path whatever the set)."""
    if condition in ("control", "bitflip"):
        return condition
    sources = plan.condition_sources(config, condition)
    return "dropout" if "dropout" in sources and condition != "all" else "seeds"


def _keep_conditions(config: dict, keep: list[str], covered=()) -> dict:
    """Per kept model, the conditions that still train every kind of condition of the config
    (:func:`condition_kind`): bitflip and dropout on every model that runs them, control and a
    seed-varying condition once, and what the mitigation and budget studies need; a model of the
    stability sweep keeps at least one of bitflip/init/all, any other model at least its first.
    ``covered``: models an overlay leaves as config.yaml has them (its own case trains them)."""
    out, seen = {}, set()
    for name in sorted(keep, key=lambda m: -len(config["models"][m]["conditions"])):
        conditions = config["models"][name]["conditions"]
        if name in covered:
            seen |= {condition_kind(config, c) for c in conditions}
        need = set()
        if name in config["mitigation"]["models"] or name in config["budget"]["models"]:
            need = set(config["mitigation"]["conditions"])
        seen |= {condition_kind(config, c) for c in need}
        mine = set(need)
        for c in conditions:
            kind = condition_kind(config, c)
            if kind in ("bitflip", "dropout") and name not in covered or kind not in seen:
                mine.add(c)
                seen.add(kind)
        if name in config["stability"]["models"] and not {"init", "bitflip", "all"} & mine:
            mine.add(next(c for c in ("bitflip", "init", "all") if c in conditions))
        out[name] = [c for c in conditions if c in mine] or conditions[:1]
    return out


# what every training job's recipe depends on besides its model: an overlay that changes one of
# these trains config.yaml's models differently, so nothing of config.yaml's case covers them
RECIPE_KEYS = ("vectorize", "dataset", "training", "conditions", "overrides", "data_resampling")


def _unchanged(path: Path, full: dict) -> tuple[set[str], set[str]]:
    """What an overlay of config.yaml leaves exactly as config.yaml has it (config.yaml's own case
    runs it): the models, and the sections (divergence, mitigation) whose models are among them.
    Nothing if the overlay changes a key of every job's recipe (RECIPE_KEYS)."""
    if path == REPO / "config.yaml" or "standalone" in _header(path).lower():
        return set(), set()
    default = cfg.validate(default_config())
    if any(full[k] != default[k] for k in RECIPE_KEYS):
        return set(), set()
    models = {m for m, spec in full["models"].items() if default["models"].get(m) == spec}
    sections = {s for s in ("divergence", "mitigation") if full[s] == default[s] and set(full[s]["models"]) <= models}
    return models, sections


def _own_run_method(methods: list[str]) -> list[str]:
    """Of mitigation.methods, the first with a training run of its own (snapshot): the one method
    that keeps train_mitigation, predict_mitigation and metrics_mitigation (tta, the method, the
    method with TTA) in the DAG; none if no method has one (nor has the full config's DAG)."""
    from nondet.methods import REGISTRY

    return [m for m in methods if m in REGISTRY and REGISTRY[m].run != "plain"][:1]


def reduce_config(path: Path, root: Path) -> dict:
    """``path``'s config at smoke size: every rule of its DAG and every kind of condition it
    trains. One model per architecture, each kind of condition once, the first comparison and
    factorial design, the last TTA spec, one budget, 2 replicas (all in one job), 2 epochs."""
    raw = full_config(path)
    full = cfg.validate(raw)  # the full config itself must be valid
    c = copy.deepcopy(raw)
    covered, same_sections = _unchanged(path, full)
    keep = _keep_models(full)
    # an overlay's models that config.yaml has as they are and only the stability sweep names
    # (config.yaml's own case runs them), while the sweep keeps another model
    only_swept = [m for m in keep if m in covered and not _named_outside_stability(full, m)]
    if [m for m in full["stability"]["models"] if m in keep and m not in only_swept]:
        keep = [m for m in keep if m not in only_swept]
    conditions = _keep_conditions(full, keep, covered)
    c["models"] = {k: v for k, v in (c.get("models") or {}).items() if k in keep}
    for name, spec in c["models"].items():
        arch = full["models"][name]["arch"]
        spec["params"] = {**spec.get("params", {}), **SMALL_PARAMS.get(arch, {})}
        spec["conditions"] = conditions[name]
    c["overrides"] = {
        m: {k: v for k, v in o.items() if k in conditions[m]} for m, o in full["overrides"].items() if m in keep
    }
    c["overrides"] = {m: o for m, o in c["overrides"].items() if o}
    c.update(device="cpu", replicas=2, replicas_per_job=8, threads_per_job=1, checkpoint_every=0)
    t = c.setdefault("training", {})
    t.update(epochs=2, cycles=1, eval_every=1, batch_size=32, warmup_epochs=min(t.get("warmup_epochs", 0), 1))
    for per_condition in c["overrides"].values():
        for override in per_condition.values():
            override.update({k: v for k, v in (("epochs", 2), ("cycles", 1)) if k in override})
    if full["models"]:
        c["dataset"] = stand_in_dataset(full["dataset"], root)
    for s in ("divergence", "stability", "mitigation", "budget"):
        c[s] = {**full[s], "models": [m for m in full[s]["models"] if m in keep]}
    c["divergence"]["twins"] = {k: min(v, 1) for k, v in full["divergence"]["twins"].items()}
    c["divergence"]["record_points"] = 4
    c["mitigation"]["snapshot_cycles"] = 2
    # a section as config.yaml has it: what its rules need to be in the DAG (config.yaml's case
    # runs the rest): one kind of twin, one mitigation method with a run of its own
    if "divergence" in same_sections:
        first = next((k for k, v in c["divergence"]["twins"].items() if v), None)
        c["divergence"]["twins"] = {k: int(k == first) for k in c["divergence"]["twins"]}
    if "mitigation" in same_sections:
        c["mitigation"]["methods"] = _own_run_method(full["mitigation"]["methods"])
    if isinstance(c["mitigation"]["tta"], list):
        c["mitigation"]["tta"] = c["mitigation"]["tta"][-1:]
    c["budget"]["epochs"] = [2]
    for section in ("comparisons", "factorial"):
        c[section] = dict(list(full[section].items())[:1])
    for spec in c["comparisons"].values():
        spec["replicas"] = 3
    for spec in c["factorial"].values():
        spec.update(levels=2, bootstrap_resamples=20)
    c["metrics"] = {**full["metrics"], "bootstrap_resamples": 50}
    if full["runs"]["groups"]:
        write_runs(root / "work", full["runs"]["groups"])
    c.pop("max_jobs", None)
    cfg.validate(c)
    return c


# --- the rules of a DAG -------------------------------------------------------------------------


def _text(out) -> str:
    """What a Snakemake run printed: a finished process's stdout and stderr, or that text saved."""
    return out if isinstance(out, str) else out.stdout + out.stderr


def dag_rules(out) -> set[str]:
    """Rules of the jobs a dry run (or a run) lists in its 'Job stats' table."""
    text = _text(out)
    table = text.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    rules = set(re.findall(r"^(\w+)\s+\d+\s*$", table, re.M)) - {"total"}
    assert rules, text[-3000:]
    return rules


def executed_rules(out) -> set[str]:
    return set(re.findall(r"^(?:local)?rule (\w+):\s*$", _text(out), re.M))


def full_dag_rules(path: Path, workdir: Path, targets) -> set[str]:
    """The rules of the full (unreduced) config's DAG, by a dry run (data and runs are absent:
    a dry run plans the dataset job and never reads them)."""
    config = full_config(path)
    if config.get("runs", {}).get("groups"):
        write_runs(workdir, config["runs"]["groups"])
    return dag_rules(snakemake(workdir, "-n", *targets, config=config))


def extra_targets(config: dict) -> list[str]:
    """Targets beside `all`: the paper side-by-side table (rules/paper.smk, not part of `all`)
    wherever a mitigation study runs. (make budget's study: tests/test_budget.py.)"""
    return ["results/tables/paper_comparison.csv"] if config["mitigation"]["models"] else []


def run_targets(path: Path) -> list[str]:
    """What a run of ``path``'s config asks for: `all` and :func:`extra_targets`."""
    return ["all", *extra_targets(cfg.validate(full_config(path)))]


def check_every_rule_ran(path: Path, out, plan_dir: Path, *, exact: bool = True) -> None:
    """``out``, a finished run of :func:`run_targets` (its process, or its saved output), planned
    exactly the rules of the full config's DAG of ``path`` (its dry run in ``plan_dir``) and
    executed every one of them. ``exact=False``: a run whose config adds sections to ``path``'s
    (another shipped config's run standing in for it too) planned and executed at least those."""
    wanted = full_dag_rules(path, plan_dir, run_targets(path))
    planned, executed = dag_rules(out), executed_rules(out)  # the run's own plan
    if exact:
        assert planned == wanted, f"the reduction loses or adds rules: {sorted(planned ^ wanted)}"
        assert executed == wanted
    else:
        assert wanted <= planned, f"the run lacks rules of {path.name}'s DAG: {sorted(wanted - planned)}"
        assert wanted <= executed, f"rules of {path.name}'s DAG that did not run: {sorted(wanted - executed)}"
    done = re.findall(r"^(\d+) of (\d+) steps \(100%\) done", _text(out), re.M)
    assert done and done[-1][0] == done[-1][1], _text(out)[-2000:]


def trained_kinds(config: dict) -> dict:
    """What a config trains, by kind: (architecture, :func:`condition_kind`) pairs, mitigation
    methods, twin kinds of the divergence study, and the architectures of the stability sweep."""
    c = cfg.validate(copy.deepcopy(config))
    models = {m: s for m, s in c["models"].items() if s}
    return {
        "conditions": {(s["arch"], condition_kind(c, k)) for s in models.values() for k in s["conditions"]},
        "methods": set(c["mitigation"]["methods"]) if c["mitigation"]["models"] else set(),
        "twins": {k for k, n in c["divergence"]["twins"].items() if n and c["divergence"]["models"]},
        "stability": {models[m]["arch"] for m in c["stability"]["models"] if m in models},
    }


def check_covers_reduction(path: Path, config: dict, root: Path) -> None:
    """``config``, a run standing in for ``path``'s reduction (RUN_ELSEWHERE), trains every kind
    that :func:`reduce_config` keeps of ``path``: each (architecture, kind of condition), each
    mitigation method, each kind of twin and each architecture of the stability sweep."""
    wanted, have = trained_kinds(reduce_config(path, root)), trained_kinds(config)
    for key in wanted:
        missing = wanted[key] - have[key]
        assert not missing, f"the run standing in for {path.name} does not train these {key}: {sorted(missing)}"


# A shipped config whose DAG a shared run of another test file executes (beside what that file
# asserts about its outputs) is run there instead of twice: config -> (module, its test calling
# check_every_rule_ran on each of the module's DAG_CONFIGS). Checked by
# test_each_config_run_elsewhere_is_checked_there.
RUN_ELSEWHERE = {
    "examples/config.yaml": ("test_example", "test_every_rule_of_the_examples_config_runs"),
    "config.yaml": ("test_workflow", "test_every_rule_of_config_yaml_and_compare_example_runs"),
    "configs/compare_example.yaml": ("test_workflow", "test_every_rule_of_config_yaml_and_compare_example_runs"),
    "configs/paper.yaml": ("test_cifar", "test_paper_slice_runs_on_cpu"),
}


def configs_run_here() -> list[Path]:
    return [p for p in shipped_configs() if str(p.relative_to(REPO)) not in RUN_ELSEWHERE]


@pytest.mark.slow  # runs Snakemake
@pytest.mark.parametrize("path", configs_run_here(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_rule_of_a_shipped_config_runs(path, tmp_path):
    targets = run_targets(path)
    plan_dir, work = tmp_path / "plan", tmp_path / "work"
    plan_dir.mkdir(), work.mkdir()
    small = reduce_config(path, tmp_path)
    out = snakemake(work, "--cores", "2", *targets, config=small)
    check_every_rule_ran(path, out, plan_dir)
    snakemake(work, "--report", "results/report.html", *targets, config=small)  # captions, report() outputs
    assert (work / "results/report.html").stat().st_size > 0


def test_each_config_run_elsewhere_is_checked_there():
    """Every config of RUN_ELSEWHERE is shipped, and the test it names exists and checks every rule
    of that config's DAG on its run; every other shipped config is parametrized above."""
    import importlib
    import inspect

    for name, (module_name, test_name) in RUN_ELSEWHERE.items():
        assert REPO / name in shipped_configs(), f"RUN_ELSEWHERE: {name} is not a shipped config"
        module = importlib.import_module(module_name)
        test = getattr(module, test_name, None)
        assert callable(test), f"tests/{module_name}.py has no {test_name}: add it or drop {name} from RUN_ELSEWHERE"
        assert REPO / name in getattr(module, "DAG_CONFIGS", ()), f"tests/{module_name}.py: add {name} to DAG_CONFIGS"
        assert "check_every_rule_ran(" in inspect.getsource(test), f"{test_name} must call check_every_rule_ran"
    assert set(configs_run_here()) | {REPO / n for n in RUN_ELSEWHERE} == set(shipped_configs())
