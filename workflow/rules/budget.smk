# The compute budget before submission (issue 13): every experiment in scope rehearsed at its
# real shapes on the meta device (no GPU, no weights, no data), then FLOPs -> GPU-hours.
#   snakemake --cores 1 budget                     # paper preset (prints the table)
# One shape rehearsal per experiment, rerun when its run config changes; Table 2 (a layout with
# a `projection`, analysis/layouts.yaml) reads its experiment's row to cite the projection.


localrules: shape_rehearsal, budget


rule shape_rehearsal:
    """One experiment at its shapes (meta device): a training step and a test image per dataset."""
    output:
        shapes_csv("{experiment}"),
    input:
        # its run config (rewritten when the experiment's config changes) and the whole config,
        # which the program reads (`ancient`: another experiment's edit reruns nothing here)
        run_config=lambda wc: run_config_path(wc.experiment, seeds_of(wc.experiment)[0]),
        config=ancient(EFFECTIVE_CONFIG),
    wildcard_constraints:
        experiment="[^/]+",
    params:
        engine=ENGINE_ARGS,
    log:
        log_path("shape_rehearsal", "{experiment}"),
    conda:
        CONDA_ENV
    shell:
        PYTHON + " -m fisa.bench.rehearse {params.engine} --mode shapes --experiments {wildcards.experiment:q}"
        " --output {output:q} > {log:q} 2>&1"


rule budget:
    """FLOPs per step -> GPU-hours, FPS and memory per experiment, the total, and Table 2 beside."""
    output:
        csv=f"{RESULTS}/budget/budget.csv",
        md=f"{RESULTS}/budget/budget.md",
    input:
        shapes=[shapes_csv(e) for e in config["experiments"] if in_scope(e)],
        config=ancient(EFFECTIVE_CONFIG),
    params:
        engine=ENGINE_ARGS,
        settings=PRESET_CFG["budget"],   # accelerator, peak, utilisation, cards: a rerun trigger
    log:
        log_path("budget", "all"),
    conda:
        CONDA_ENV
    shell:
        "python -m fisa.bench.budget {params.engine} --shapes {input.shapes:q} --output {output.csv:q}"
        " --markdown {output.md:q} > {log:q} 2>&1 && cat {output.md:q}"
