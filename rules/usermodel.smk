# A user's model (arch "package.module:callable") is imported, built and run on two examples
# before any of its training jobs: every error names the model and the problem.
rule check_model:
    input:
        data=DATA,
    output:
        "results/checks/{model}.json",
    log:
        "logs/checks/{model}.log",
    conda:
        "../envs/torch.yaml"
    params:
        code=code("check_model"),
        spec=lambda w: plan.model_spec(config, w.model),
        conditions=lambda w: config["models"][w.model]["conditions"],
        bitflip_tensor=lambda w: plan.recipe(config, w.model, "bitflip").get(
            "bitflip_tensor"
        ),
        data_hash=plan.data_hash(config),
        code_version=CODE_VERSION,
    script:
        "../workflow_scripts/check_model.py"
