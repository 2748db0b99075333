rule train_snapshot:
    input:
        data=DATA,
        check=lambda w: model_check(w.model),
    output:
        "results/mitigation/train/{model}/{condition}/chunk{chunk}.h5",
    log:
        "logs/mitigation/train/{model}/{condition}/chunk{chunk}.log",
    # the longest single jobs start first
    priority: 2
    conda:
        "../envs/torch.yaml"
    threads: config["threads_per_job"]
    resources:
        gpu=GPU_JOB,
    params:
        job=snapshot_job,
        checkpoint_every=config["checkpoint_every"],
    script:
        "../workflow_scripts/train.py"


rule predict_mitigation:
    input:
        data=DATA,
        trained=mitigation_train_file,
    output:
        "results/mitigation/predict/{model}/{condition}/{method}/chunk{chunk}.h5",
    log:
        "logs/mitigation/predict/{model}/{condition}/{method}/chunk{chunk}.log",
    conda:
        "../envs/torch.yaml"
    threads: config["threads_per_job"]
    resources:
        gpu=GPU_JOB,
    params:
        job=mitigation_predict_job,
        method=lambda w: method_of(w.method),
        tta=tta_of,
    script:
        "../workflow_scripts/predict.py"


rule metrics_mitigation:
    input:
        lambda w: expand(
            "results/mitigation/predict/{model}/{condition}/{method}/chunk{chunk}.h5",
            chunk=CHUNKS,
            **w,
        ),
    output:
        "results/mitigation/metrics/{model}/{condition}/{method}.h5",
    log:
        "logs/mitigation/metrics/{model}/{condition}/{method}.log",
    conda:
        "../envs/analysis.yaml"
    params:
        metrics=metrics_params,
    script:
        "../workflow_scripts/metrics.py"


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
        expect=lambda w, input: metrics_expect(list(input)),
    script:
        "../workflow_scripts/mitigation_table.py"
