rule predict:
    input:
        data=DATA,
        trained=TRAIN,
    output:
        PREDICT,
    log:
        "logs/predict/{model}/{condition}/chunk{chunk}.log",
    conda:
        "../envs/torch.yaml"
    threads: config["threads_per_job"]
    resources:
        gpu=GPU_JOB,
    params:
        code=code("predict"),
        job=train_job,
    script:
        "../workflow_scripts/predict.py"
