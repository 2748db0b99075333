use rule train as train_factorial with:
    input:
        data=DATA,
        check=lambda w: model_check(config["factorial"][w.name]["model"]),
    output:
        FACTORIAL_TRAIN,
    log:
        "logs/factorial/{name}/train_chunk{chunk}.log",
    params:
        code=code("train", kept=FACTORIAL_TRAIN),
        job=lambda w: plan.factorial_job(config, w.name, int(w.chunk)),


use rule predict as predict_factorial with:
    input:
        data=DATA,
        trained=FACTORIAL_TRAIN,
    output:
        FACTORIAL_PREDICT,
    log:
        "logs/factorial/{name}/predict_chunk{chunk}.log",
    params:
        job=lambda w: plan.factorial_job(config, w.name, int(w.chunk)),


rule factorial:
    input:
        lambda w: factorial_predictions(w.name),
    output:
        csv=report(
            "results/factorial/{name}/components.csv",
            caption="../report/factorial.rst",
            category="Is it real?",
            labels={"design": "{name}", "type": "table"},
        ),
        pdf="results/factorial/{name}/components.pdf",
        png=report(
            "results/factorial/{name}/components.png",
            caption="../report/factorial.rst",
            category="Is it real?",
            labels={"design": "{name}", "type": "figure"},
        ),
    log:
        "logs/factorial/{name}/components.log",
    conda:
        "../envs/analysis.yaml"
    params:
        code=code("factorial"),
        design=lambda w: shown.brief(factorial_params(w), "factorial design"),
    script:
        "../workflow_scripts/factorial.py"
