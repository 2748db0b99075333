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
        expect=lambda w, input: metrics_expect(list(input)),
    script:
        "../workflow_scripts/plot_diversity.py"
