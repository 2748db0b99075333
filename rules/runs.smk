# Bring your own runs (README "Bring your own runs"): prediction files trained anywhere are
# imported into the predict stage's layout, then analysed like trained runs. No training.
# Wildcards run_model/group (not model/condition) so these rules never compete with training;
# helpers in nondet.workflow.runs (group_inputs, predictions_path, compare_params, targets).
import nondet.workflow.runs as byo

RUN_MODELS = sorted({m for m, _ in RUN_GROUPS})
RUNS_TARGETS = byo.targets(config)


# With no trained models the model/condition constraints are empty (no constraint), so the
# training-path rules also match imported files; run labels never name a trained model.
ruleorder: import_runs > predict
ruleorder: runs_metrics > metrics
ruleorder: runs_plot_diversity > plot_diversity


wildcard_constraints:
    run_model="|".join(RUN_MODELS) or "(?!)",
    group="|".join(config["runs"]["groups"]) or "(?!)",


rule import_runs:
    input:
        unpack(lambda w: byo.group_inputs(config, w.group)),
    output:
        predictions_path("plain", "{run_model}", "{group}", 0),
    log:
        "logs/runs/import/{run_model}/{group}.log",
    conda:
        "../envs/torch.yaml"
    params:
        code=code("import_runs"),
        runs=lambda w: {
            "spec": config["runs"]["groups"][w.group],
            "experiment": config["experiment"],
            "code_version": CODE_VERSION,
        },
        # the files by content, not date: a replaced file reimports its group
        content=lambda w: byo.group_content(config, w.group),
    script:
        "../workflow_scripts/import_runs.py"


rule runs_metrics:
    input:
        predictions_path("plain", "{run_model}", "{group}", 0),
    output:
        "results/metrics/{run_model}/{group}.h5",
    log:
        "logs/metrics/{run_model}/{group}.log",
    conda:
        "../envs/analysis.yaml"
    params:
        code=code("metrics"),
        metrics=lambda w: expect.runs_metrics_params(config, w.run_model, w.group),
    script:
        "../workflow_scripts/metrics.py"


rule runs_plot_diversity:
    input:
        lambda w: metric_files(w.run_model),
    output:
        pdf="results/figures/diversity_{run_model}.pdf",
        png=report(
            "results/figures/diversity_{run_model}.png",
            caption="../report/diversity_figure.rst",
            category="Diversity",
            labels={"model": "{run_model}", "figure": "imported runs"},
        ),
    log:
        "logs/plots/diversity_{run_model}.log",
    conda:
        "../envs/analysis.yaml"
    params:
        code=code("runs_plot_diversity"),
    script:
        "../workflow_scripts/runs_plot_diversity.py"


rule runs_compare:
    input:
        baseline=lambda w: byo.predictions_path(
            config, config["runs"]["comparisons"][w.name]["baseline"]
        ),
        candidate=lambda w: byo.predictions_path(
            config, config["runs"]["comparisons"][w.name]["candidate"]
        ),
    output:
        verdict=report(
            "results/runs/compare/{name}/verdict.csv",
            caption="../report/verdict.rst",
            category="Is it real?",
            labels={"comparison": "{name} (imported runs)", "type": "verdict"},
        ),
        md="results/runs/compare/{name}/verdict.md",
        csv=report(
            "results/runs/compare/{name}/summary.csv",
            caption="../report/runs_compare.rst",
            category="Is it real?",
            labels={"comparison": "{name} (imported runs)", "type": "every test"},
        ),
        plan=report(
            "results/runs/compare/{name}/plan.csv",
            caption="../report/runs_plan.rst",
            category="Is it real?",
            labels={"comparison": "{name} (imported runs)", "type": "plan"},
        ),
        pdf="results/runs/compare/{name}/summary.pdf",
        png=report(
            "results/runs/compare/{name}/summary.png",
            caption="../report/runs_compare.rst",
            category="Is it real?",
            labels={"comparison": "{name} (imported runs)", "type": "figure"},
        ),
    log:
        "logs/runs/compare/{name}.log",
    conda:
        "../envs/analysis.yaml"
    params:
        code=code("compare"),
        compare=lambda w: shown.brief(
            byo.compare_params(config, w.name, CODE_VERSION), "comparison"
        ),
    script:
        "../workflow_scripts/compare.py"


rule runs_all_pairs:
    input:
        [byo.predictions_path(config, g) for g in config["runs"]["groups"]],
    output:
        report(
            "results/runs/all_pairs.csv",
            caption="../report/runs_all_pairs.rst",
            category="Is it real?",
            labels={"comparison": "all pairs of imported groups", "type": "table"},
        ),
    log:
        "logs/runs/all_pairs.log",
    conda:
        "../envs/analysis.yaml"
    params:
        code=code("runs_all_pairs"),
        groups=list(config["runs"]["groups"]),
        alpha=config["runs"]["all_pairs_alpha"],
        on_diverged=config["metrics"]["on_diverged"],
        code_version=CODE_VERSION,
    script:
        "../workflow_scripts/runs_all_pairs.py"
