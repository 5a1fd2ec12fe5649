# Evaluation (per experiment x seed x dataset) and efficiency (per experiment).


rule evaluate:
    """Evaluate one trained run on one dataset -> the evaluation JSON."""
    output:
        f"{RESULTS}/eval/{{experiment}}/seed{{seed}}/{{dataset}}.json",
    input:
        run=f"{RESULTS}/runs/{{experiment}}/seed{{seed}}/done.json",
        data=lambda wc: ancient(data_marker(wc.dataset)),  # re-made data do not rerun it (markers are checked at use)
        text=lambda wc: text_inputs(wc.experiment, wc.dataset),  # class list, prompt templates (inputs.smk)
    params:
        engine=ENGINE_ARGS,
        rundir=lambda wc: run_dir(wc.experiment, wc.seed),
        config_hash=_experiment_hash,
    log:
        log_path("evaluate", "{experiment}", "seed{seed}", "{dataset}"),
    benchmark:
        bench_path("evaluate", "{experiment}", "seed{seed}", "{dataset}"),
    conda:
        CONDA_ENV
    threads: rule_threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    shell:
        "python -m fisa.engine.evaluate {params.engine} --experiment {wildcards.experiment}"
        " --seed {wildcards.seed} --dataset {wildcards.dataset} --run-dir {params.rundir:q}"
        " --output {output:q} > {log:q} 2>&1"


rule efficiency:
    """Parameters, speed and memory of one experiment's model (first seed's run, its first dataset's images)."""
    output:
        f"{RESULTS}/efficiency/{{experiment}}.json",
    input:
        run=lambda wc: f"{run_dir(wc.experiment, seeds_of(wc.experiment)[0])}/done.json",
        data=lambda wc: data_marker(resolved(wc.experiment)["datasets"][0]),
    params:
        engine=ENGINE_ARGS,
        seed=lambda wc: seeds_of(wc.experiment)[0],
        dataset=lambda wc: resolved(wc.experiment)["datasets"][0],
        rundir=lambda wc: run_dir(wc.experiment, seeds_of(wc.experiment)[0]),
        config_hash=lambda wc: config_hash(resolved(wc.experiment)),
    log:
        log_path("efficiency", "{experiment}"),
    conda:
        CONDA_ENV
    threads: rule_threads("efficiency")
    resources:
        **rule_resources("efficiency"),
    shell:
        "python -m fisa.engine.efficiency {params.engine} --experiment {wildcards.experiment}"
        " --seed {params.seed} --dataset {params.dataset} --run-dir {params.rundir:q}"
        " --output {output:q} > {log:q} 2>&1"
