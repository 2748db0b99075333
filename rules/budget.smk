# Mitigation versus training budget: plain, TTA and each method of mitigation.methods alone and
# with TTA (snapshot, EMA, SWA), trained at each
# number of epochs of budget.epochs (config budget; not part of the default target all).
# Run it with: snakemake mitigation_budget --cores 2  (make budget)


use rule train as train_budget with:
    output:
        BUDGET_TRAIN,
    log:
        "logs/budget/{model}/{condition}/e{epochs}/train/{run}/chunk{chunk}.log",
    params:
        code=code("train", kept=BUDGET_TRAIN),
        job=budget_job,


use rule predict_mitigation as predict_budget with:
    input:
        data=DATA,
        trained=budget_train_file,
    output:
        BUDGET_PREDICT,
    log:
        "logs/budget/{model}/{condition}/e{epochs}/predict/{method}/chunk{chunk}.log",
    wildcard_constraints:
        method="|".join(BUDGET_TAGS.values()),
    params:
        job=budget_job,
        method=lambda w: budget_method_of(w.method),
        tta=lambda w: plan_methods.tta_spec(config, budget_method_of(w.method)),
        plugins=config["mitigation"]["plugins"],


use rule metrics as metrics_budget with:
    input:
        lambda w: expand(BUDGET_PREDICT, chunk=CHUNKS, **w),
    output:
        BUDGET_METRICS,
    log:
        "logs/budget/{model}/{condition}/e{epochs}/metrics/{method}.log",
    wildcard_constraints:
        method="|".join(BUDGET_TAGS.values()),
    params:
        metrics=budget_metrics_params,


rule mitigation_budget:
    input:
        budget_metric_files,
    output:
        csv=report(
            "results/tables/mitigation_budget.csv",
            caption="../report/mitigation_budget.rst",
            category="Mitigation",
        ),
        md="results/tables/mitigation_budget.md",
        pdf="results/figures/mitigation_budget.pdf",
        png=report(
            "results/figures/mitigation_budget.png",
            caption="../report/mitigation_budget.rst",
            category="Mitigation",
        ),
    log:
        "logs/mitigation_budget.log",
    conda:
        "../envs/analysis.yaml"
    params:
        code=code("mitigation_budget"),
        expect=lambda w, input: metrics_expect(list(input)),
        labels=shown.brief(plan_methods.method_labels(config), "method names"),
    script:
        "../workflow_scripts/mitigation_budget.py"
