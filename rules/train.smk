rule train:
    input:
        data=DATA,
        check=lambda w: model_check(w.model),
    output:
        TRAIN,
    log:
        "logs/train/{model}/{condition}/chunk{chunk}.log",
    # training first: the jobs after it are short, so no core waits on a late training job
    priority: 1
    conda:
        "../envs/torch.yaml"
    threads: config["threads_per_job"]
    resources:
        gpu=GPU_JOB,
    params:
        code=code("train", kept=TRAIN),
        job=train_job,
    script:
        "../workflow_scripts/train.py"
