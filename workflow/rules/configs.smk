# Config files, written by local in-process rules (never while the DAG is parsed):
#   results/<P>/configs/runs/<E>/seed<k>.yaml   the run config of one experiment and seed
#                                               (fisa.config.run_config): train, evaluate and
#                                               efficiency read it and nothing else
#   results/<P>/configs/generators/<G>.yaml     a harness generator's (train_generator)
#   results/<P>/configs/config.yaml             the whole resolved config (fetch, figures)
# Each is rewritten only when its content changes (params trigger; the code version it records
# is left out), so a config edit reruns exactly the runs whose run config changed.
# train/evaluate/efficiency take their run config as a plain input. (An `ancient` input with a
# per-section params trigger would be more selective, but Snakemake does not evaluate the
# params of jobs downstream of a job that reruns, so that trigger would never fire.) A run
# config whose model/train sections did not change (e.g. an eval edit) makes the train job
# rerun, and it returns at once: the engine finds the finished run of the same config.
# fetch and figures read the whole config as an `ancient` input: rewriting it reruns nothing.

localrules:
    run_config,
    generator_run_config,
    effective_config,


rule run_config:
    """The run config of one experiment and seed."""
    output:
        f"{RESULTS}/configs/runs/{{experiment}}/seed{{seed}}.yaml",
    params:
        content=lambda wc: file_key(resolved(wc.experiment, wc.seed)),
    run:
        write_run_config(output[0], resolved(wildcards.experiment, wildcards.seed))


rule generator_run_config:
    """The run config of one harness-trained generator."""
    output:
        f"{RESULTS}/configs/generators/{{generator}}.yaml",
    wildcard_constraints:
        generator="[^/]+",
    params:
        content=lambda wc: file_key(_generator_run(wc.generator)),
    run:
        write_run_config(output[0], _generator_run(wildcards.generator))


rule effective_config:
    """The whole config Snakemake resolved (config.yaml or --configfile, with --config overrides)."""
    output:
        EFFECTIVE_CONFIG,
    params:
        content=lambda wc: file_key(dict(config)),
    run:
        write_run_config(output[0], dict(config))


def _generator_run(generator):
    try:
        return generator_run_config(config, generator, PRESET)
    except ConfigError as e:
        raise WorkflowError(str(e)) from None
