# The compute budget before submission (issue 13): every experiment in scope rehearsed at its
# real shapes on the meta device (no GPU, no weights, no data), then FLOPs -> GPU-hours.
#   snakemake --cores 1 budget                     # paper preset (prints the table)


localrules: shape_rehearsal, budget


def _budget_experiments():
    return " ".join(shlex.quote(e) for e in config["experiments"] if in_scope(e))


rule shape_rehearsal:
    """Every experiment in scope: one training step and one test image at its shapes (meta device)."""
    output:
        f"{RESULTS}/budget/shapes.csv",
    params:
        engine=ENGINE_ARGS,
        experiments=_budget_experiments(),
    log:
        log_path("shape_rehearsal", "all"),
    conda:
        CONDA_ENV
    shell:
        "python -m fisa.bench.rehearse {params.engine} --mode shapes --experiments {params.experiments} "
        "--output {output} > {log} 2>&1"


rule budget:
    """FLOPs per step -> GPU-hours, FPS and memory per experiment, the total, and Table 2 beside."""
    output:
        csv=f"{RESULTS}/budget/budget.csv",
        md=f"{RESULTS}/budget/budget.md",
    input:
        rules.shape_rehearsal.output,
    params:
        engine=ENGINE_ARGS,
    conda:
        CONDA_ENV
    shell:
        "python -m fisa.bench.budget {params.engine} --shapes {input} --output {output.csv} --markdown {output.md}"
