# A method's own training run (snapshot: cyclic learning rate; a plug-in's); EMA, SWA and TTA
# predict with the protocol's replicas (results/train/), which keep the EMA and SWA weights.
use rule train as train_mitigation with:
    output:
        MITIGATION_TRAIN,
    log:
        "logs/mitigation/train/{model}/{condition}/{run}/chunk{chunk}.log",
    wildcard_constraints:
        run="|".join(r for r in plan_methods.training_runs(config) if r != "plain")
        or "(?!)",
    # the longest single jobs start first
    priority: 2
    params:
        code=code("train", kept=MITIGATION_TRAIN),
        job=mitigation_run_job,


use rule predict as predict_mitigation with:
    input:
        data=DATA,
        trained=mitigation_train_file,
    output:
        MITIGATION_PREDICT,
    log:
        "logs/mitigation/predict/{model}/{condition}/{method}/chunk{chunk}.log",
    params:
        job=mitigation_predict_job,
        method=lambda w: method_of(w.method),
        tta=tta_of,
        plugins=config["mitigation"]["plugins"],


use rule metrics as metrics_mitigation with:
    input:
        lambda w: expand(MITIGATION_PREDICT, chunk=CHUNKS, **w),
    output:
        MITIGATION_METRICS,
    log:
        "logs/mitigation/metrics/{model}/{condition}/{method}.log",


rule mitigation_table:
    input:
        mitigation_metric_files(),
    output:
        csv=report(
            "results/tables/mitigation.csv",
            caption="../report/mitigation.rst",
            category="Mitigation",
        ),
        md="results/tables/mitigation.md",
        pdf="results/figures/mitigation.pdf",
        png=report(
            "results/figures/mitigation.png",
            caption="../report/mitigation.rst",
            category="Mitigation",
        ),
    log:
        "logs/mitigation_table.log",
    conda:
        "../envs/analysis.yaml"
    params:
        code=code("mitigation_table"),
        expect=lambda w, input: metrics_expect(list(input)),
        labels=shown.brief(plan_methods.method_labels(config), "method names"),
    script:
        "../workflow_scripts/mitigation_table.py"
