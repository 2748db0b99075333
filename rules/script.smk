# A researcher's own training script (models.<name>.train or .command, nondet.workflow.script): one job
# per chunk of replicas writes the predictions file the predict rule writes for other models, so
# metrics, tables, figures, comparisons and the report read it unchanged. Its determinism audit
# (results/checks/{model}.audit.json) runs first. A model whose script owns its data (data: script)
# does not wait for the pipeline's data set (script_data), so none is built for it.
ruleorder: train_script > predict
ruleorder: train_script_arm > predict_arm


rule audit_script:
    input:
        data=lambda w: script_data(w.model),
    output:
        "results/checks/{model}.audit.json",
    log:
        "logs/checks/{model}.audit.log",
    wildcard_constraints:
        model=SCRIPT_MODELS,
    priority: 2
    conda:
        "../envs/torch.yaml"
    threads: config["threads_per_job"]
    resources:
        gpu=GPU_JOB,
    params:
        code=code("audit_script"),
        job=lambda w: plan.audit_job(config, w.model),
    script:
        "../workflow_scripts/audit_script.py"


rule train_script:
    input:
        data=lambda w: script_data(w.model),
        audit=lambda w: script_audit(w.model),
    output:
        PREDICT,
    log:
        "logs/train/{model}/{condition}/chunk{chunk}.log",
    wildcard_constraints:
        model=SCRIPT_MODELS,
    priority: 1
    conda:
        "../envs/torch.yaml"
    threads: config["threads_per_job"]
    resources:
        gpu=GPU_JOB,
    params:
        code=code("train_script", kept=PREDICT),
        job=train_job,
    script:
        "../workflow_scripts/train_script.py"


use rule train_script as train_script_arm with:
    input:
        data=lambda w: script_data(config["comparisons"][w.name]["model"]),
        audit=lambda w: script_audit(config["comparisons"][w.name]["model"]),
    output:
        ARM_PREDICT,
    log:
        "logs/compare/{name}/{arm}/train_chunk{chunk}.log",
    wildcard_constraints:
        name=SCRIPT_COMPARISONS,
    params:
        code=code("train_script", kept=ARM_PREDICT),
        job=lambda w: plan.comparison_job(config, w.name, w.arm, int(w.chunk)),
