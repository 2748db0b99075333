rule predict:
    input:
        data=DATA,
        trained="results/train/{model}/{condition}/chunk{chunk}.h5",
    output:
        "results/predict/{model}/{condition}/chunk{chunk}.h5",
    log:
        "logs/predict/{model}/{condition}/chunk{chunk}.log",
    conda:
        "../envs/torch.yaml"
    threads: config["threads_per_job"]
    resources:
        gpu=GPU_JOB,
    params:
        job=train_job,
    script:
        "../workflow_scripts/predict.py"
