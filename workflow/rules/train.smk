# Training: one job per experiment x seed. The run folder holds checkpoints/, losses.csv,
# model_final.pt; `done.json` is written last and is the rule's only output, so a failed,
# pre-empted or timed-out job leaves no output Snakemake takes as complete, while its
# checkpoints stay: the next attempt (SLURM requeue, --retries, or a plain rerun) resumes.
# The run config (rule `run_config`) is the program's only input; when the model/train
# sections change, the engine moves the old run folder aside and trains afresh.


def _train_inputs(wildcards):
    r = resolved(wildcards.experiment, wildcards.seed)
    return {
        "data": ancient(data_marker(r["train"]["dataset"])),  # re-made data do not retrain (checked at use)
        "backbone": backbone_marker(r["model"]["backbone"]),
        "generator": generator_marker(r["model"]["generator"]),
        "run_config": run_config_path(wildcards.experiment, wildcards.seed),
        "text": text_inputs(wildcards.experiment, r["train"]["dataset"]),  # class list, templates (inputs.smk)
    }


def _experiment_hash(sections):
    # A params rerun trigger: changing one experiment's config (or the preset defaults it
    # inherits) in `sections` reruns that experiment's outputs they shape, nothing else.
    return lambda wc: config_hash(resolved(wc.experiment, wc.seed), sections)


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
        train_hash=_experiment_hash(TRAIN_SECTIONS),
        launch=launcher("train"),
    log:
        log_path("train", "{experiment}", "seed{seed}"),
    benchmark:
        bench_path("train", "{experiment}", "seed{seed}"),
    conda:
        CONDA_ENV
    threads: rule_threads("train")
    # Trainings before evaluations when both are ready: the longest jobs first (a short evaluation
    # fills a free core later; on 2 cores an evaluation started first kept a 2-core training
    # waiting with one core idle, seen in the rehearsal). Under SLURM it orders submissions only.
    priority: 1
    resources:
        **rule_resources("train"),
    shell:
        guarded("{params.launch} -m fisa.engine.train --run-config {input.run_config:q} >> {log:q} 2>&1")
