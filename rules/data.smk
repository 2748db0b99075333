rule dataset:
    output:
        DATA,
    params:
        spec=cfg.data_spec(config),
        data_hash=cfg.data_hash(config),
        code_version=CODE_VERSION,
    log:
        "logs/dataset.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/make_dataset.py"
