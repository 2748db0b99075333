# A run's tables beside the paper's published numbers; not part of `all`:
#   snakemake --configfile configs/paper.yaml results/tables/paper_comparison.csv
rule paper_comparison:
    input:
        expected=f"{REPO_DIR}/paper/expected.csv",
        diversity="results/tables/diversity.csv",
        mitigation=mitigation_targets(),
    output:
        csv=report(
            "results/tables/paper_comparison.csv",
            caption="../report/paper_comparison.rst",
            category="Paper comparison",
        ),
        md="results/tables/paper_comparison.md",
    log:
        "logs/paper_comparison.log",
    conda:
        "../envs/analysis.yaml"
    params:
        code=code("paper_comparison"),
    script:
        "../workflow_scripts/paper_comparison.py"
