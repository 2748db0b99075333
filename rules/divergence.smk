rule divergence:
    input:
        data=DATA,
        check=lambda w: model_check(w.model),
    output:
        DIVERGENCE,
    log:
        "logs/divergence/{model}.log",
    # the longest single jobs start first
    priority: 2
    conda:
        "../envs/torch.yaml"
    threads: config["threads_per_job"]
    resources:
        gpu=GPU_JOB,
    params:
        code=code("divergence", kept=DIVERGENCE),
        job=divergence_job,
    script:
        "../workflow_scripts/divergence.py"


rule plot_divergence:
    input:
        DIVERGENCE,
    output:
        pdf="results/figures/divergence_{model}.pdf",
        png=report(
            "results/figures/divergence_{model}.png",
            caption="../report/divergence.rst",
            category="Instability",
            labels={"model": "{model}", "figure": "twin divergence"},
        ),
    log:
        "logs/plots/divergence_{model}.log",
    conda:
        "../envs/analysis.yaml"
    params:
        code=code("plot_divergence"),
        expect=lambda w: shown.expectations(job_expect(divergence_job(w))),
    script:
        "../workflow_scripts/plot_divergence.py"
