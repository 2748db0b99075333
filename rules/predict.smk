rule predict:
    input:
        data=DATA,
        trained="results/train/{model}/{condition}/chunk{chunk}.h5",
    output:
        "results/predict/{model}/{condition}/chunk{chunk}.h5",
    params:
        job=train_job,
    threads: config["threads_per_job"]
    log:
        "logs/predict/{model}/{condition}/chunk{chunk}.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/predict.py"
