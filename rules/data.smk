# Local (on the submit host under a cluster profile): downloading needs the network that compute
# nodes often lack; reading, checking and converting the data set needs no GPU.
rule dataset:
    input:
        plan.data_inputs(config),
    output:
        DATA,
    log:
        "logs/dataset.log",
    localrule: True
    conda:
        "../envs/torch.yaml"
    params:
        code=code("dataset"),
        spec=plan.data_spec(config),
        data_hash=plan.data_hash(config),
        code_version=CODE_VERSION,
    script:
        "../workflow_scripts/dataset.py"
