rule stability:
    input:
        stability_metric_files(),
    output:
        csv=report(
            "results/tables/stability.csv",
            caption="../report/stability.rst",
            category="Instability",
        ),
        md="results/tables/stability.md",
        pdf="results/figures/stability_by_family.pdf",
        png=report(
            "results/figures/stability_by_family.png",
            caption="../report/stability.rst",
            category="Instability",
        ),
    log:
        "logs/stability.log",
    conda:
        "../envs/analysis.yaml"
    params:
        code=code("stability"),
        expect=lambda w, input: metrics_expect(list(input)),
    script:
        "../workflow_scripts/stability.py"
