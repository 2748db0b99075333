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
        expect=lambda w, input: metrics_expect(list(input)),
    script:
        "../workflow_scripts/diversity_table.py"


# made last, from every table and figure of rule all: a failed run leaves the provenance of the
# last finished one, and --report refuses a mix of configs (nondet.reportcheck)
rule provenance:
    input:
        provenance_inputs,
    output:
        report(
            "results/tables/provenance.csv",
            caption="../report/provenance.rst",
            category="Provenance",
        ),
    log:
        "logs/provenance.log",
    conda:
        "../envs/analysis.yaml"
    params:
        config=config,
    script:
        "../workflow_scripts/provenance.py"
