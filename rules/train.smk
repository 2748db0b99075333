rule train:
    input:
        data=DATA,
    output:
        "results/train/{model}/{condition}/chunk{chunk}.h5",
    params:
        job=train_job,
    threads: config["threads_per_job"]
    log:
        "logs/train/{model}/{condition}/chunk{chunk}.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/train.py"
