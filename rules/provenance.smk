# made last, from every table and figure of rule all: a failed run leaves the provenance of the
# last finished one, and --report refuses a mix of configs (nondet.workflow.reportcheck)
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
        code=code("provenance"),
        config=shown.whole_config(config),
    script:
        "../workflow_scripts/provenance.py"
