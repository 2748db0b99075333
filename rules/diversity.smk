rule metrics:
    input:
        lambda w: predict_files(w.model, w.condition),
    output:
        METRICS,
    log:
        "logs/metrics/{model}/{condition}.log",
    conda:
        "../envs/analysis.yaml"
    params:
        code=code("metrics"),
        metrics=metrics_params,
    script:
        "../workflow_scripts/metrics.py"


rule diversity_table:
    input:
        metric_files(),
    output:
        csv=report(
            "results/tables/diversity.csv",
            caption="../report/diversity_table.rst",
            category="Diversity",
        ),
        md=report(
            "results/tables/diversity.md",
            caption="../report/diversity_notes.rst",
            category="Diversity",
        ),
    log:
        "logs/diversity_table.log",
    conda:
        "../envs/analysis.yaml"
    params:
        code=code("diversity_table"),
        expect=lambda w, input: metrics_expect(list(input)),
    script:
        "../workflow_scripts/diversity_table.py"


rule plot_diversity:
    input:
        lambda w: metric_files(w.model),
    output:
        pdf="results/figures/diversity_{model}.pdf",
        png=report(
            "results/figures/diversity_{model}.png",
            caption="../report/diversity_figure.rst",
            category="Diversity",
            labels={"model": "{model}", "figure": "diversity by source"},
        ),
    log:
        "logs/plots/diversity_{model}.log",
    conda:
        "../envs/analysis.yaml"
    params:
        code=code("plot_diversity"),
        expect=lambda w, input: metrics_expect(list(input)),
    script:
        "../workflow_scripts/plot_diversity.py"
