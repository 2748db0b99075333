"""Statistics for "is my improvement real?" on synthetic data with known answers."""

import numpy as np
import pytest

from nondet.analysis.variance import anova_components, variance_components


@pytest.mark.parametrize("planted", [(4.0, 1.0, 0.0, 0.5), (0.0, 2.0, 1.0, 0.25)])
def test_variance_components_recover_planted_two_factor(planted):
    va, vb, vab, ve = planted
    rng = np.random.default_rng(3)
    estimates = []
    for _ in range(40):
        a, b = 12, 12
        y = (
            rng.normal(0, np.sqrt(va), (a, 1))
            + rng.normal(0, np.sqrt(vb), (1, b))
            + rng.normal(0, np.sqrt(vab + ve), (a, b))
        )
        est = anova_components(y, ["init", "shuffle"])
        estimates.append([est["init"]["component"], est["shuffle"]["component"], est["residual"]["component"]])
    mean = np.mean(estimates, axis=0)
    assert mean == pytest.approx([va, vb, vab + ve], abs=0.35 * max(va, vb, 1.0))


def test_variance_components_three_factors_with_interaction():
    rng = np.random.default_rng(4)
    sources = ["init", "shuffle", "augment"]
    planted = {"init": 1.0, "shuffle": 0.5, "augment": 0.0, "initxshuffle": 0.8}
    est = []
    for _ in range(30):
        n = 8
        y = (
            rng.normal(0, 1.0, (n, 1, 1))
            + rng.normal(0, np.sqrt(0.5), (1, n, 1))
            + rng.normal(0, np.sqrt(0.8), (n, n, 1))
            + rng.normal(0, 0.3, (n, n, n))
        )
        est.append({k: v["component"] for k, v in anova_components(y, sources).items()})
    for name, value in planted.items():
        got = np.mean([e[name] for e in est])
        assert got == pytest.approx(value, abs=0.2), name
    assert np.mean([e["residual"] for e in est]) == pytest.approx(0.09, abs=0.03)
    rows = variance_components(y, sources, n_resamples=50, seed=0)
    by = {r["effect"]: r for r in rows}
    assert by["initxshuffle"]["p_value"] < 1e-6 and by["shufflexaugment"]["p_value"] > 1e-4
    # the SE is a fair yardstick: close to how much the estimates vary across the 30 designs
    for name in ("init", "shuffle"):
        spread = np.std([e[name] for e in est], ddof=1)
        assert 0.3 * spread < by[name]["component_se"] < 3 * spread, name
    # shares rank the planted components: init and its interaction carry most, augment ~none
    assert by["augment"]["share"] < 0.1 < by["init"]["share"]


# --- finite-test-set part, seeds of cells and arms, comparison/factorial plans ------------------

import copy  # noqa: E402

from helpers import default_config  # noqa: E402

from nondet.analysis.variance import per_example_split  # noqa: E402
from nondet.seeds import CONDITIONS, factorial_seeds, replica_seeds, source_seeds  # noqa: E402
from nondet.workflow import config as cfg  # noqa: E402
from nondet.workflow import expect, plan  # noqa: E402


def test_per_example_split_is_exact_and_finds_independent_flips():
    rng = np.random.default_rng(6)
    flips = (rng.random((300, 1000)) < 0.9).astype(float)  # independent per-example flips
    s = per_example_split(flips)
    assert s["total"] == pytest.approx(np.var(flips.mean(1), ddof=1))
    cov = np.cov(flips.T) / 1000**2  # indep = trace, shared = off-diagonal sum
    assert s["indep"] == pytest.approx(np.trace(cov)) and s["shared"] == pytest.approx(cov.sum() - np.trace(cov))
    assert s["indep"] == pytest.approx(0.09 / 1000, rel=0.05)
    assert abs(s["shared"]) < 0.3 * s["indep"]
    shifted = flips + rng.normal(0, 0.05, (300, 1))  # plus a per-run shift shared by all examples
    assert per_example_split(shifted)["shared"] == pytest.approx(0.05**2, rel=0.25)


@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_source_seeds_generalise_replica_seeds(condition):
    for r in range(3):
        levels = dict.fromkeys(CONDITIONS[condition], r)
        assert source_seeds(levels, 11) == replica_seeds(condition, r, 11)


def test_factorial_cell_seeds_vary_only_their_own_source():
    sources = ["init", "shuffle", "augment"]
    a = factorial_seeds(sources, (0, 1, 2), 5)
    assert a == source_seeds({"init": 0, "shuffle": 1, "augment": 2}, 5)
    b = factorial_seeds(sources, (0, 2, 2), 5)
    assert (a.init, a.augment) == (b.init, b.augment) and a.shuffle != b.shuffle
    assert a.deterministic and a.bitflip is None and a.dropout == replica_seeds("control", 0, 5).dropout
    with pytest.raises(ValueError):
        factorial_seeds(["bitflip", "init"], (0, 0), 5)
    with pytest.raises(ValueError):
        source_seeds({"nonsense": 1}, 5)


DEFAULT = default_config()  # the repository's config.yaml, wherever pytest runs


def with_sections(**sections):
    c = copy.deepcopy(DEFAULT)
    c.update(sections)
    return cfg.validate(c)


def test_comparison_defaults_and_jobs():
    c = with_sections(
        comparisons={
            "lr": {"model": "cnn", "candidate": {"training": {"lr": 0.1}}},
            "w": {"model": "cnn", "candidate": {"params": {"channels": 16}}},
        }
    )
    spec = c["comparisons"]["lr"]
    assert (spec["replicas"], spec["condition"], spec["alpha"], spec["power"]) == (8, "all", 0.05, 0.8)
    assert spec["baseline"] is not c["comparisons"]["w"]["baseline"]  # defaults not shared
    base, cand = (plan.comparison_job(c, "lr", arm, 0) for arm in ("baseline", "candidate"))
    assert base["recipe"]["lr"] == DEFAULT["training"]["lr"] and cand["recipe"]["lr"] == 0.1
    assert {k for k in base if base[k] != cand[k]} == {"arm", "base_seed", "seeds", "recipe", "spec_hash"}
    assert base["base_seed"] != cand["base_seed"]  # the arms draw independent seeds
    assert base["model_spec"] == plan.model_spec(c, "cnn")
    assert plan.comparison_job(c, "w", "candidate", 0)["model_spec"]["channels"] == 16
    # a comparison does not touch the protocol's jobs
    assert plan.train_job(c, "cnn", "all", 0) == plan.train_job(cfg.validate(DEFAULT), "cnn", "all", 0)


def test_comparison_over_chosen_sources_carries_explicit_seeds():
    c = with_sections(
        comparisons={
            "s": {"model": "cnn", "sources": ["init", "shuffle"], "replicas": 3, "candidate": {"training": {"lr": 0.1}}}
        }
    )
    assert "condition" not in c["comparisons"]["s"]
    job = plan.comparison_job(c, "s", "baseline", 0)
    seeds = [s for s in job["seeds"]]
    assert len({s["init"] for s in seeds}) == 3 and len({s["shuffle"] for s in seeds}) == 3
    assert len({s["augment"] for s in seeds}) == 1 and {s["kernels"] for s in seeds} == {None}
    other = plan.comparison_job(c, "s", "candidate", 0)["seeds"]
    assert not {s["init"] for s in seeds} & {s["init"] for s in other}


@pytest.mark.parametrize(
    "section, message",
    [
        ({"comparisons": {"x": {"model": "nope", "candidate": {}}}}, "comparisons.x.model"),
        (
            {"comparisons": {"x": {"model": "cnn", "candidate": {"params": {"depth": 3}}}}},
            "comparisons.x.candidate.params.depth",
        ),
        ({"comparisons": {"x": {"model": "cnn", "candidate": {}}}}, "identical"),
        (
            {"comparisons": {"x": {"model": "linear", "condition": "dropout", "candidate": {"training": {"lr": 0.1}}}}},
            "no dropout",
        ),
        (
            {
                "comparisons": {
                    "x": {
                        "model": "cnn",
                        "condition": "all",
                        "sources": ["init"],
                        "candidate": {"training": {"lr": 0.1}},
                    }
                }
            },
            "not both",
        ),
        (
            {"comparisons": {"x": {"model": "cnn", "candidate": {"training": {"lr": -1}}}}},
            "comparisons.x.candidate.training.lr",
        ),
        ({"factorial": {"f": {"model": "cnn", "sources": ["init"]}}}, "factorial.f.sources"),
        ({"factorial": {"f": {"model": "linear", "sources": ["init", "dropout"]}}}, "no dropout"),
        (
            {"comparisons": {"x": {"model": "cnn", "gamma": 1.2, "candidate": {"training": {"lr": 0.1}}}}},
            "comparisons.x.gamma",
        ),
        (
            {"comparisons": {"x": {"model": "cnn", "gamma": 0.5, "candidate": {"training": {"lr": 0.1}}}}},
            "comparisons.x.gamma",
        ),
        (
            {"comparisons": {"x": {"model": "cnn", "margin": -1.0, "candidate": {"training": {"lr": 0.1}}}}},
            "comparisons.x.margin",
        ),
        (
            {
                "comparisons": {
                    "x": {"model": "cnn", "margin": {"accuracy": -0.5}, "candidate": {"training": {"lr": 0.1}}}
                }
            },
            "comparisons.x.margin.accuracy",
        ),
        (
            {"comparisons": {"x": {"model": "cnn", "replicas": 1, "candidate": {"training": {"lr": 0.1}}}}},
            "comparisons.x.replicas",
        ),
    ],
)
def test_invalid_comparison_or_design_names_the_key(section, message):
    with pytest.raises(cfg.ConfigError) as err:
        with_sections(**section)
    assert message in str(err.value)


def test_held_fixed_note_for_init_only_says_about_two_independent_runs():
    note = expect.held_fixed_note(["init"], ["init", "shuffle", "augment"])
    assert "held fixed: shuffle, augment" in note and "about 2 independent runs" in note
    assert "about 2 independent runs" not in expect.held_fixed_note(["init", "shuffle"], ["init", "shuffle", "augment"])
    assert expect.held_fixed_note(["init", "shuffle"], ["init", "shuffle"]).startswith("every source")


def test_factorial_jobs_cover_the_grid_once():
    c = with_sections(factorial={"g": {"model": "cnn", "sources": ["init", "shuffle", "augment"]}})
    cells = plan.factorial_cells(c, "g")
    assert len(cells) == 27 and len(set(cells)) == 27
    jobs = [plan.factorial_job(c, "g", k) for k in range(len(plan.factorial_chunks(c, "g")))]
    replicas = [r for j in jobs for r in j["replicas"]]
    assert replicas == list(range(27))
    seeds = [s for j in jobs for s in j["seeds"]]
    assert len({(s["init"], s["shuffle"], s["augment"]) for s in seeds}) == 27
    assert len({s["init"] for s in seeds}) == 3 and {s["kernels"] for s in seeds} == {None}


def test_per_example_values_average_to_the_metrics_and_effect_is_honoured():
    from nondet.analysis import metrics as M
    from nondet.analysis.variance import per_example_values

    rng = np.random.default_rng(7)
    logits, labels = rng.normal(size=(4, 50, 3)).astype(np.float32), rng.integers(0, 3, 50)
    v = per_example_values(logits, labels)
    assert v["accuracy"].mean(1) == pytest.approx(M.accuracy(logits, labels))
    assert v["cross_entropy"].mean(1) == pytest.approx(M.cross_entropy(logits, labels))
    from nondet.analysis.planning import plan, replicas_needed

    a, b = rng.normal(0, 1, (6, 50)), rng.normal(0.3, 1, (6, 50))
    row = plan(b, a, effect=0.5)[0]
    sd = np.sqrt((a.mean(1).var(ddof=1) + b.mean(1).var(ddof=1)) / 2)
    assert row["effect"] == 0.5 and row["replicas_needed"] == replicas_needed(0.5, sd)


def test_unequal_levels_per_source():
    c = with_sections(factorial={"g": {"model": "cnn", "sources": ["init", "shuffle"], "levels": [4, 3]}})
    assert len(plan.factorial_cells(c, "g")) == 12 and max(plan.factorial_cells(c, "g")) == (3, 2)
    with pytest.raises(cfg.ConfigError, match="one number per source"):
        with_sections(factorial={"g": {"model": "cnn", "sources": ["init", "shuffle"], "levels": [4, 3, 2]}})
    y = np.random.default_rng(8).normal(size=(6, 4, 3))
    est = anova_components(y, ["init", "shuffle", "augment"])
    assert sum(v["ss"] for v in est.values()) == pytest.approx(((y - y.mean()) ** 2).sum())
    assert est["initxshuffle"]["df"] == 15 and est["residual"]["df"] == 30
