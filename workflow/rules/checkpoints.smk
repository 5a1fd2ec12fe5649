# Pre-trained checkpoints: CLIP backbones and Mask2Former generators, fetched into the
# preset's cache_dir (the marker JSON is written last). Generators with `source: harness`
# are trained by the harness instead (the small preset's tiny ones, Fig. 2b's re-trained one).


rule fetch_checkpoint:
    """Download (or, for random-init tiny models, just record) one backbone or generator."""
    output:
        f"{CACHE_DIR}/.done/{{kind}}_{{name}}.json",
    wildcard_constraints:
        kind="backbone|generator",
        name="[^/]+",
    input:
        ancient(EFFECTIVE_CONFIG),
    params:
        engine=ENGINE_ARGS,
    log:
        log_path("fetch_checkpoint", "{kind}_{name}"),
    benchmark:
        bench_path("fetch_checkpoint", "{kind}_{name}"),
    conda:
        CONDA_ENV
    threads: rule_threads("fetch_checkpoint")
    resources:
        **rule_resources("fetch_checkpoint"),
    shell:
        PYTHON + " -m fisa.engine.fetch {params.engine} --{wildcards.kind} {wildcards.name} > {log:q} 2>&1"


def _train_generator_inputs(wildcards):
    entry = PRESET_CFG["generators"].get(wildcards.generator)
    if entry is None or entry["source"] != "harness":
        raise WorkflowError(f"train_generator: generator {wildcards.generator!r} is not `source: harness` "
                            f"in presets.{PRESET}.generators")
    # re-made data do not retrain (fisa.utils.markers checks them at use)
    inputs = [ancient(data_marker("coco")), generator_config_path(wildcards.generator)]
    base = entry.get("base")
    if base:
        if base not in PRESET_CFG["generators"]:
            raise WorkflowError(f"presets.{PRESET}.generators.{wildcards.generator}.base: {base!r} "
                                f"is not a generator of this preset")
        inputs.append(generator_marker(base))
    return inputs


def _generator_hash(wildcards):
    # Rerun trigger: the generator's entry and the training defaults it is trained with.
    entry = PRESET_CFG["generators"].get(wildcards.generator, {})
    return config_hash({"generator": entry, "train": PRESET_CFG["defaults"]["train"]})


rule train_generator:
    """Train a Mask2Former generator with the harness (multi-GPU like `train`)."""
    output:
        f"{CACHE_DIR}/generators/{{generator}}/done.json",
    input:
        _train_generator_inputs,
    wildcard_constraints:
        generator="[^/]+",
    params:
        config_hash=_generator_hash,
        run_config=lambda wc: generator_config_path(wc.generator),
        launch=launcher("train_generator"),
    log:
        log_path("train_generator", "{generator}"),
    benchmark:
        bench_path("train_generator", "{generator}"),
    conda:
        CONDA_ENV
    threads: rule_threads("train_generator")
    resources:
        **rule_resources("train_generator"),
    shell:
        guarded("{params.launch} -m fisa.engine.train_generator --run-config {params.run_config:q} >> {log:q} 2>&1")
