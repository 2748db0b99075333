rule dataset:
    output:
        DATA,
    log:
        "logs/dataset.log",
    conda:
        "../envs/torch.yaml"
    params:
        spec=cfg.data_spec(config),
        data_hash=cfg.data_hash(config),
        code_version=CODE_VERSION,
    script:
        "../workflow_scripts/make_dataset.py"
