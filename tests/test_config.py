import copy

import pytest
import yaml
from helpers import REPO, default_config

from nondet.workflow import config as cfg
from nondet.workflow import config_checks, plan

DEFAULT = default_config()  # the repository's config.yaml, wherever pytest runs


def broken(**changes):
    c = copy.deepcopy(DEFAULT)
    for path, value in changes.items():
        node = c
        keys = path.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return c


def test_default_config_is_valid_and_filled():
    c = cfg.validate(DEFAULT)
    assert c["training"]["epochs"] == DEFAULT["training"]["epochs"]
    assert plan.groups(c)[0] == ("cnn", "control")
    assert len(plan.groups(c)) == sum(len(m["conditions"]) for m in DEFAULT["models"].values())


def test_defaults_fill_a_minimal_config():
    c = cfg.validate({"models": {"m": {"arch": "linear", "conditions": ["init"]}}})
    assert c["replicas"] == 8 and c["training"]["lr"] == 0.2 and c["metrics"]["seed"] == 0


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"trainig": {}}, "trainig"),
        ({"training__epochs": "ten"}, "training.epochs"),
        ({"training__epochs": 0}, "training.epochs"),
        ({"training__lr": -1}, "training.lr"),
        ({"training__learning_rate": 0.1}, "learning_rate"),
        ({"replicas": 1}, "replicas"),
        ({"device": "tpu"}, "device"),
        ({"models__cnn__conditions": ["control", "seeds"]}, "models.cnn.conditions.1"),
        ({"models__cnn__arch": "transformer"}, "models.cnn.arch"),
        ({"models__linear__conditions": ["dropout"]}, "models.linear.conditions"),
        ({"models__cnn__params": {"width": 3}}, "models.cnn.params.width"),
        ({"overrides": {"resnet9": {"init": {"epochs": 3}}}}, "overrides.resnet9"),
        ({"overrides": {"linear": {"dropout": {"epochs": 3}}}}, "overrides.linear.dropout"),
        ({"overrides": {"cnn": {"all": {"epoch": 3}}}}, "epoch"),
        ({"training__cycles": 4}, "cycles"),
        ({"dataset__name": "imagenet"}, "dataset.name"),
        ({"metrics__bootstrap_resamples": -5}, "metrics.bootstrap_resamples"),
        ({"divergence__models": ["resnet9"]}, "divergence.models"),
        ({"instability": {"models": ["cnn"]}}, "config key instability: renamed to divergence"),
        ({"mitigation__conditions": ["dropout2"]}, "mitigation.conditions.0"),
        ({"mitigation__snapshot_cycles": 4}, "mitigation.snapshot_cycles"),
        ({"mitigation__conditions": ["dropout"], "mitigation__models": ["mlp"]}, "mitigation.conditions"),
    ],
)
def test_invalid_config_names_the_key(changes, message):
    with pytest.raises(cfg.ConfigError) as err:
        cfg.validate(broken(**changes))
    assert message in str(err.value)


def test_recipe_overrides_apply_in_order_and_change_only_their_job():
    c = broken(overrides={"cnn": {"init": {"epochs": 3}}})
    c["models"]["cnn"]["training"] = {"lr": 0.1}
    c = cfg.validate(c)
    assert plan.recipe(c, "cnn", "init")["epochs"] == 3
    assert plan.recipe(c, "cnn", "init")["lr"] == 0.1
    assert plan.recipe(c, "cnn", "all")["epochs"] == DEFAULT["training"]["epochs"]
    base = cfg.validate(DEFAULT)
    assert plan.train_job(c, "cnn", "init", 0) != plan.train_job(base, "cnn", "init", 0)
    assert plan.train_job(base, "linear", "all", 0) == plan.train_job(
        cfg.validate(broken(overrides={"cnn": {"init": {"epochs": 3}}})), "linear", "all", 0
    )


def test_chunks_cover_every_replica_once():
    c = cfg.validate(broken(replicas=7, replicas_per_job=3))
    assert plan.chunks(c) == [[0, 1, 2], [3, 4, 5], [6]]


# --- values that passed the schema, then crashed inside jobs ------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"training__lr": float("nan")}, "training.lr: nan is not a finite number"),
        ({"training__lr": float("inf")}, "training.lr: inf is not a finite number"),
        ({"overrides": {"cnn": {"all": {"weight_decay": float("inf")}}}}, "overrides.cnn.all.weight_decay"),
        ({"base_seed": 2.0}, "base_seed: 2.0 is not of type 'integer' (a whole number is meant: write 2"),
        ({"replicas": 4.0}, "config key replicas: 4.0"),
        ({"training__epochs": 3.0}, "training.epochs: 3.0"),
        ({"dataset__seed": 1.0}, "dataset.seed"),
        (
            {"models__cnn__params": {"channels": 8.0}},
            "models.cnn.params.channels: 8.0 is not of type 'integer' (a whole number is meant",
        ),
        ({"models__cnn__params": {"kernels": [5, 3.0, 3]}}, "models.cnn.params.kernels"),
        ({"models__mlp__params": {"batchnorm": 1}}, "models.mlp.params.batchnorm"),
    ],
)
def test_non_finite_and_float_integers_are_refused_naming_the_key(changes, message):
    """Item 3: .nan/.inf and 4.0-for-4 passed the schema and failed later, inside jobs."""
    with pytest.raises(cfg.ConfigError) as err:
        cfg.validate(broken(**changes))
    assert message in str(err.value)


def test_an_oversized_plan_fails_fast_with_the_job_count():
    """Item 4: replicas: 1000000 planned for minutes while memory grew by gigabytes."""
    import time

    t0 = time.perf_counter()
    with pytest.raises(cfg.ConfigError) as err:
        cfg.validate(broken(replicas=1_000_000))
    assert time.perf_counter() - t0 < 5
    n = plan.plan_size(cfg.validate(broken(replicas=1_000_000, max_jobs=10**9)))
    assert f"about {n} jobs" in str(err.value) and "max_jobs" in str(err.value)
    assert "replicas_per_job" in str(err.value)
    assert n > 2 * 1_000_000 // 8  # at least a train and a predict job per chunk of one group
    default = cfg.validate(DEFAULT)
    assert plan.plan_size(default) <= default["max_jobs"]


def test_plan_size_counts_at_least_every_planned_chunk():
    c = cfg.validate(broken(replicas=7, replicas_per_job=3))
    trained = len(plan.groups(c)) * len(plan.chunks(c))
    assert plan.plan_size(c) >= 2 * trained + len(plan.groups(c))


def test_yaml_number_read_as_a_string_gets_a_suggestion():
    """Item 7: YAML 1.1 reads 1e9 as a string."""
    c = yaml.safe_load("training: {lr: 1e9}\nmodels: {m: {arch: linear, conditions: [init]}}")
    assert c["training"]["lr"] == "1e9"
    with pytest.raises(cfg.ConfigError, match=r"training\.lr.*write 1\.0e\+9"):
        cfg.validate(c)
    assert yaml.safe_load("x: 1.0e+9")["x"] == 1e9  # the suggestion really is a float


@pytest.mark.slow
def test_duplicate_keys_and_syntax_errors_name_file_and_line(tmp_path, capsys):
    """Item 7: duplicate keys silently kept the last value; syntax errors named no file."""
    dup = tmp_path / "dup.yaml"
    dup.write_text("replicas: 2\ntraining:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(cfg.ConfigError, match=r"dup.yaml, line 4: duplicate key 'lr' \(first on line 3\)"):
        cfg.load_yaml(dup)
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  cnn:\n    arch: cnn1d\n    conditions: [control\n")
    with pytest.raises(cfg.ConfigError, match=r"bad.yaml, line \d+, column \d+: YAML syntax error"):
        cfg.load_yaml(bad)
    assert cfg.check_files([str(bad)]) == 1 and "bad.yaml, line" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text("replicas: 3\n")
    assert cfg.check_files([str(REPO / "config.yaml"), str(good)]) == 0 and "valid" in capsys.readouterr().out


# --- bitflip_tensor resolves against the built model when the config is read (issue 22) ---


def test_every_built_in_architecture_has_parameter_names():
    """A new entry in models.ARCHITECTURES also needs its torch-free parameter names (the
    Snakefile cannot build models): forgetting paramnames.py fails here, naming the file."""
    import torch

    from nondet.training.bitflip import weight_tensors
    from nondet.training.models import ARCHITECTURES, build_model
    from nondet.workflow.paramnames import parameter_names, weight_names

    for arch in ARCHITECTURES:
        params = dict(config_checks.ARCH_PARAMS.get(arch, {}))
        try:
            names = parameter_names(arch, params)
        except ValueError as e:
            pytest.fail(str(e))
        shape = (1, 40) if arch in ("cnn1d", "linear", "mlp") else (3, 8, 8)
        net = build_model({"arch": arch, **params}, shape, 10, torch.Generator().manual_seed(0))
        assert names == [n for n, _ in net.named_parameters()], f"{arch}: nondet/workflow/paramnames.py is out of date"
        assert weight_names(arch, params) == [n for n, _ in weight_tensors(net)]


def test_an_architecture_without_parameter_names_is_named_with_the_file():
    from nondet.workflow.paramnames import parameter_names

    with pytest.raises(ValueError, match=r"'newnet' has no parameter names in nondet/workflow/paramnames.py"):
        parameter_names("newnet", {})


@pytest.mark.parametrize(
    "arch, params",
    [
        ("linear", {}),
        ("mlp", {}),
        ("mlp", {"batchnorm": False, "hidden": 7}),
        ("cnn1d", {"kernels": [5, 3]}),
        ("resnet", {}),
        ("resnet", {"blocks": 1, "shortcut": "option_a"}),
        ("resnet", {"blocks": 3, "width": 8, "shortcut": "option_a"}),
    ],
)
def test_parameter_names_match_the_built_models(arch, params):
    """The torch-free names the config check uses are those of the model build_model builds."""
    import torch

    from nondet.training.bitflip import weight_tensors
    from nondet.training.models import build_model
    from nondet.workflow.paramnames import parameter_names, weight_names

    params = {**config_checks.ARCH_PARAMS[arch], **params}
    shape = (1, 40) if arch in ("cnn1d", "linear", "mlp") else (3, 8, 8)
    net = build_model({"arch": arch, **params}, shape, 10, torch.Generator().manual_seed(0))
    assert parameter_names(arch, params) == [n for n, _ in net.named_parameters()]
    assert weight_names(arch, params) == [n for n, _ in weight_tensors(net)]


def _paper_config():
    with open(REPO / "configs/paper.yaml") as f:
        return cfg._merge(DEFAULT, yaml.safe_load(f))


def test_a_bitflip_tensor_the_model_lacks_fails_when_the_config_is_read():
    """configs/paper.yaml once set stem.0.weight for every model; its linear and MLP stability
    jobs raised at their first step while the config check said "valid"."""
    c = _paper_config()
    for m in ("linear", "mlp"):
        c["models"][m].pop("training", None)
    with pytest.raises(
        cfg.ConfigError, match=r"training.bitflip_tensor: .*'stem.0.weight'.* model 'linear' .*fc.weight"
    ):
        cfg.validate(c)
    c = broken(models__cnn__training={"bitflip_tensor": "fc.weihgt"})
    with pytest.raises(cfg.ConfigError, match=r"models.cnn.training.bitflip_tensor: .* model 'cnn' .*body.0.weight"):
        cfg.validate(c)
    c = broken(overrides={"mlp": {"bitflip": {"bitflip_tensor": "stem.0.weight"}}})
    with pytest.raises(cfg.ConfigError, match=r"overrides.mlp.bitflip.bitflip_tensor: .*hidden.weight"):
        cfg.validate(c)
    # a comparison arm that removes the parameter (the MLP without BatchNorm has no bn.weight)
    c = broken(
        models__mlp__training={"bitflip_tensor": "bn.weight"},
        comparisons={"nobn": {"model": "mlp", "condition": "bitflip", "candidate": {"params": {"batchnorm": False}}}},
    )
    with pytest.raises(cfg.ConfigError, match=r"comparisons.nobn.candidate .*'bn.weight'"):
        cfg.validate(c)


def test_every_paper_model_flips_a_tensor_it_has():
    """configs/paper.yaml: the authors' targets, the stem conv of every ResNet and the first
    weight of the linear model and the MLP, each a parameter of the model as built."""
    import torch

    from nondet.training.models import build_model

    c = cfg.validate(_paper_config())
    targets = {m: plan.recipe(c, m, "bitflip")["bitflip_tensor"] for m in c["models"]}
    assert {m: t for m, t in targets.items() if not m.startswith("resnet")} == {
        "linear": "fc.weight",
        "mlp": "hidden.weight",
        "mlp512": "hidden.weight",  # the authors' HiddenNet1 (no BatchNorm, so hidden.bias exists too)
    }
    assert {targets[m] for m in targets if m.startswith("resnet")} == {"stem.0.weight"}
    for m, tensor in targets.items():
        net = build_model(plan.model_spec(c, m), (3, 8, 8), 10, torch.Generator().manual_seed(0))
        assert tensor == next(n for n, _ in net.named_parameters())  # the first weight


@pytest.mark.slow
def test_config_cli_names_file_and_line_of_a_yaml_syntax_error(tmp_path):
    """`python -m nondet check-config config.yaml FILE` (what `make run CONFIG=FILE` runs first) exits
    non-zero naming file and line; Snakemake's own --configfile message names neither."""
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("replicas: 2\ntraining: lr: 0.1\n")  # line 2: mapping values are not allowed here
    out = subprocess.run(
        [sys.executable, "-m", "nondet", "check-config", str(REPO / "config.yaml"), str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert f"{bad}, line 2" in out.stderr and "YAML syntax error" in out.stderr


@pytest.mark.slow
def test_make_run_config_checks_the_file_before_snakemake():
    """`make -n run CONFIG=x.yaml` runs the config check, then both snakemake calls with
    --configfile x.yaml; without CONFIG neither appears."""
    import subprocess

    # make is what `make test` runs under: no skip when it is missing
    def dry_run(*args):
        out = subprocess.run(["make", "-n", "-C", str(REPO), "run", *args], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.splitlines()

    lines = dry_run("CONFIG=x.yaml")
    check = [i for i, line in enumerate(lines) if "-m nondet check-config config.yaml x.yaml" in line]
    snakemake = [i for i, line in enumerate(lines) if "snakemake" in line and "check-config" not in line]
    assert len(check) == 1 and len(snakemake) == 2 and check[0] < snakemake[0]
    assert all("--configfile x.yaml" in lines[i] for i in snakemake)
    plain = dry_run()
    assert not any("check-config" in line or "--configfile" in line for line in plain)
    assert sum("snakemake" in line for line in plain) == 2


@pytest.mark.slow
def test_check_config_prints_the_exact_job_count_of_snakemake_dry_run(tmp_path):
    """check-config's count is the plan's own: the same number `snakemake -n` lists in a fresh
    folder (it was an estimate, about 2x off for some configs)."""
    import re
    import subprocess
    import sys

    from helpers import SNAKEMAKE

    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "replicas: 3\nreplicas_per_job: 2\ncomparisons: {lr: {model: linear, replicas: 3, candidate: {training: {lr: 0.05}}}}\n"
    )
    check = subprocess.run(
        [sys.executable, "-m", "nondet", "check-config", "config.yaml", str(mine)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stderr
    count = int(re.search(r"groups, (\d+) jobs \(snakemake -n -F\)", check.stdout).group(1))
    dry = subprocess.run(
        SNAKEMAKE + ["-n", "--configfile", str(mine)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert count == int(re.findall(r"^total\s+(\d+)\s*$", dry.stdout, re.M)[-1])
