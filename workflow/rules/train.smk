# Training: one job per experiment x seed. The run folder holds checkpoints/, losses.csv,
# model_final.pt; `done.json` is written last and is the rule's only output, so a failed,
# pre-empted or timed-out job leaves no output Snakemake takes as complete, while its
# checkpoints stay: the next attempt (SLURM requeue, --retries, or a plain rerun) resumes.


def _train_inputs(wildcards):
    r = resolved(wildcards.experiment, wildcards.seed)
    return {
        "data": ancient(data_marker(r["train"]["dataset"])),  # re-made data do not retrain (checked at use)
        "backbone": backbone_marker(r["model"]["backbone"]),
        "generator": generator_marker(r["model"]["generator"]),
        "text": text_inputs(wildcards.experiment, r["train"]["dataset"]),  # class list, templates (inputs.smk)
    }


def _experiment_hash(wildcards):
    # A params rerun trigger: changing one experiment's config (or the preset defaults it
    # inherits) reruns that experiment and what depends on it, nothing else.
    return config_hash(resolved(wildcards.experiment, wildcards.seed))


wildcard_constraints:
    experiment="|".join(sorted((re.escape(e) for e in config["experiments"]), key=len, reverse=True)),
    seed=r"\d+",
    dataset="|".join(ALL_DATASETS),


rule train:
    """Train one experiment with one seed (multi-GPU: one task per GPU)."""
    output:
        f"{RESULTS}/runs/{{experiment}}/seed{{seed}}/done.json",
    input:
        unpack(_train_inputs),
    params:
        engine=ENGINE_ARGS,
        outdir=lambda wc: run_dir(wc.experiment, wc.seed),
        config_hash=_experiment_hash,
        launch=launcher("train"),
    log:
        log_path("train", "{experiment}", "seed{seed}"),
    benchmark:
        bench_path("train", "{experiment}", "seed{seed}"),
    conda:
        CONDA_ENV
    threads: rule_threads("train")
    resources:
        **rule_resources("train"),
    shell:
        "{params.launch} -m fisa.engine.train {params.engine} --experiment {wildcards.experiment}"
        " --seed {wildcards.seed} --output-dir {params.outdir:q} >> {log:q} 2>&1"
