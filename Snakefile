# Nondeterminism and instability in neural network optimisation (Summers & Dinneen, 2021):
# train -> predict -> pairwise metrics -> tables and figures. See README.md.
# Only includes and the default target; the rules live in rules/, the logic in nondet/

from snakemake.utils import min_version

# 9.18: small files are compared by checksum (docs/snakemake.md); requirements.txt pins 9.27.1
min_version("9.18")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/predict.smk"
include: "rules/diversity.smk"
include: "rules/divergence.smk"
include: "rules/stability.smk"
include: "rules/mitigation.smk"
include: "rules/budget.smk"
include: "rules/compare.smk"
include: "rules/factorial.smk"
include: "rules/runs.smk"
include: "rules/usermodel.smk"
include: "rules/script.smk"
include: "rules/paper.smk"
include: "rules/ensembles.smk"
include: "rules/provenance.smk"
include: "rules/report.smk"


# Seconds-long tables and figures: on a cluster (profiles/gpu) they run on the submit host
# instead of waiting in the queue; a local run is unchanged.
localrules:
    diversity_table,
    plot_diversity,
    provenance,
    plot_divergence,
    stability,
    mitigation_table,
    ensemble_table,
    mitigation_budget,
    paper_comparison,
    compare,
    factorial,
    runs_plot_diversity,
    runs_compare,
    runs_all_pairs,


rule all:
    input:
        "results/tables/diversity.csv",
        "results/tables/diversity.md",
        "results/tables/provenance.csv",
        rules.report_pages.output,
        figure_files(),
        instability_targets(),
        mitigation_targets(),
        ensemble_targets(),
        compare_targets(),
        RUNS_TARGETS,


# The run's summary names, once each, the training jobs whose replicas all diverged (their logs
# say so where they ran; nondet.workflow.reportcheck.diverged_jobs).
onsuccess:
    diverged_summary()


onerror:
    diverged_summary()
