# k-model ensembles of a condition's replicas (disjoint groups, k = 1, 2, 4, ...), set beside
# snapshot ensembles and TTA at one training run: analysis only, no training (nondet.analysis.ensembles).
rule ensembles:
    input:
        lambda w: predict_files(w.model, w.condition),
    output:
        ENSEMBLES,
    log:
        "logs/ensembles/{model}/{condition}.log",
    conda:
        "../envs/analysis.yaml"
    params:
        code=code("ensembles"),
        ensembles=lambda w: expect.ensembles_params(config, w.model, w.condition),
    script:
        "../workflow_scripts/ensembles.py"


rule ensemble_table:
    input:
        ensembles=ensemble_files(),
        mitigation=mitigation_metric_files(),
    output:
        csv=report(
            "results/tables/ensembles.csv",
            caption="../report/ensembles.rst",
            category="Mitigation",
        ),
        md="results/tables/ensembles.md",
        pdf="results/figures/ensembles.pdf",
        png=report(
            "results/figures/ensembles.png",
            caption="../report/ensembles.rst",
            category="Mitigation",
        ),
    log:
        "logs/ensemble_table.log",
    conda:
        "../envs/analysis.yaml"
    params:
        code=code("ensemble_table"),
        expect=ensemble_table_expect,
        plugins=config["mitigation"]["plugins"],
    script:
        "../workflow_scripts/ensemble_table.py"
