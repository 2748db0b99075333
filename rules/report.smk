# The report's own pages (nondet.workflow.reportpages): tables rendered inline, each verdict
# beside its figure, and the overview the landing page (report/workflow.rst) includes.
from nondet.workflow import reportpages

REPORT_PAGES = reportpages.pages(report_page_targets())


rule report_pages:
    input:
        [f for p in REPORT_PAGES for f in p.inputs.values()],
    output:
        reportpages.OVERVIEW,
        [
            report(
                p.path,
                caption="../report/page.rst",
                category=p.category,
                labels={"page": p.label},
            )
            for p in REPORT_PAGES
            if p.name != "overview"
        ],
    log:
        "logs/report_pages.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        code=code("report_pages"),
        run=lambda w: {
            "experiment": config["experiment"],
            "dataset": config["dataset"]["name"],
            "device": config["device"],
            "imported": [list(g) for g in RUN_GROUPS],
        },
    script:
        "../workflow_scripts/report_pages.py"
