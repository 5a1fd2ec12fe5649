# Evaluation (per experiment x seed x dataset) and efficiency (per experiment).


rule evaluate:
    """Evaluate one trained run on one dataset -> the evaluation JSON."""
    output:
        f"{RESULTS}/eval/{{experiment}}/seed{{seed}}/{{dataset}}.json",
    input:
        run=lambda wc: f"{trained_run(wc.experiment, wc.seed)}/done.json",
        data=lambda wc: ancient(data_marker(wc.dataset)),  # re-made data do not rerun it (markers are checked at use)
        run_config=lambda wc: run_config_path(wc.experiment, wc.seed),
        text=lambda wc: text_inputs(wc.experiment, wc.dataset),  # class list, prompt templates (inputs.smk)
    params:
        config_hash=_experiment_hash(EVAL_SECTIONS),
    log:
        log_path("evaluate", "{experiment}", "seed{seed}", "{dataset}"),
    benchmark:
        bench_path("evaluate", "{experiment}", "seed{seed}", "{dataset}"),
    conda:
        CONDA_ENV
    threads: rule_threads("evaluate")
    group: job_group("evaluate")
    resources:
        **rule_resources("evaluate"),
    shell:
        guarded(PYTHON + " -m fisa.engine.evaluate --run-config {input.run_config:q} --dataset {wildcards.dataset}"
                " --output {output:q} > {log:q} 2>&1")


rule efficiency:
    """Parameters, speed and memory of one experiment's model (first seed's run, its first dataset's images)."""
    output:
        f"{RESULTS}/efficiency/{{experiment}}.json",
    input:
        run=lambda wc: f"{run_dir(wc.experiment, seeds_of(wc.experiment)[0])}/done.json",
        data=lambda wc: data_marker(resolved(wc.experiment)["datasets"][0]),
        run_config=lambda wc: run_config_path(wc.experiment, seeds_of(wc.experiment)[0]),
    params:
        dataset=lambda wc: resolved(wc.experiment)["datasets"][0],
        config_hash=lambda wc: config_hash(resolved(wc.experiment), EFFICIENCY_SECTIONS),
    log:
        log_path("efficiency", "{experiment}"),
    benchmark:
        bench_path("efficiency", "{experiment}"),
    conda:
        CONDA_ENV
    threads: rule_threads("efficiency")
    resources:
        **rule_resources("efficiency"),
    shell:
        guarded(PYTHON + " -m fisa.engine.efficiency --run-config {input.run_config:q} --dataset {params.dataset}"
                " --output {output:q} > {log:q} 2>&1")
