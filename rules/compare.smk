use rule train as train_arm with:
    input:
        data=DATA,
        check=lambda w: model_check(config["comparisons"][w.name]["model"]),
    output:
        ARM_TRAIN,
    log:
        "logs/compare/{name}/{arm}/train_chunk{chunk}.log",
    params:
        code=code("train", kept=ARM_TRAIN),
        job=lambda w: plan.comparison_job(config, w.name, w.arm, int(w.chunk)),


use rule predict as predict_arm with:
    input:
        data=DATA,
        trained=ARM_TRAIN,
    output:
        ARM_PREDICT,
    log:
        "logs/compare/{name}/{arm}/predict_chunk{chunk}.log",
    params:
        job=lambda w: plan.comparison_job(config, w.name, w.arm, int(w.chunk)),


rule compare:
    input:
        baseline=lambda w: arm_predictions(w.name, "baseline"),
        candidate=lambda w: arm_predictions(w.name, "candidate"),
    output:
        verdict=report(
            "results/compare/{name}/verdict.csv",
            caption="../report/verdict.rst",
            category="Is it real?",
            labels={"comparison": "{name}", "type": "verdict"},
        ),
        md="results/compare/{name}/verdict.md",
        csv=report(
            "results/compare/{name}/summary.csv",
            caption="../report/compare.rst",
            category="Is it real?",
            labels={"comparison": "{name}", "type": "every test"},
        ),
        plan=report(
            "results/compare/{name}/plan.csv",
            caption="../report/runs_plan.rst",
            category="Is it real?",
            labels={"comparison": "{name}", "type": "plan"},
        ),
        pdf="results/compare/{name}/summary.pdf",
        png=report(
            "results/compare/{name}/summary.png",
            caption="../report/compare.rst",
            category="Is it real?",
            labels={"comparison": "{name}", "type": "figure"},
        ),
    log:
        "logs/compare/{name}/compare.log",
    conda:
        "../envs/analysis.yaml"
    params:
        code=code("compare"),
        compare=lambda w: shown.brief(compare_params(w), "comparison"),
    script:
        "../workflow_scripts/compare.py"
