# Shared state of the workflow: the validated config, the preset in force, the targets
# of analysis/targets.yaml, paths, per-rule resources. Plain Python; the rules use it.
import hashlib
import json
import os
import re
import shlex
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError

from fisa.config import (ConfigError, config_hash, eval_datasets, experiment_names, experiment_seeds,
                         generator_run_config, is_optional, preset_name, resources_for, run_config, run_dir_of,
                         validate_config, write_run_config)
from fisa.data.registry import get_meta, list_datasets
from fisa.utils.markers import marker_path

# Paths of the repository (not of --directory): the schema and the targets travel with the code.
REPO = Path(workflow.basedir)
# Conda environment of every job (with --software-deployment-method conda).
CONDA_ENV = str(REPO / "envs/fisa.yaml")
# The analysis rules that need no torch (aggregate, tables, scorecard, training curves): a
# small env (figures keep CONDA_ENV: the qualitative figure reads images through fisa.data).
ANALYSIS_ENV = str(REPO / "envs/analysis.yaml")

# `--config with_optional=true` arrives as a string; accept the usual spellings.
for _key in ("with_optional", "warm_start"):
    if isinstance(config.get(_key), str):
        _flag = config[_key].strip().lower()
        if _flag not in ("true", "false", "yes", "no", "1", "0"):
            raise WorkflowError(f"{_key}: {config[_key]!r} is not true/false")
        config[_key] = _flag in ("true", "yes", "1")

# Fail before any job is submitted, naming the offending key (the one validation of the
# config; the variant enum comes from fisa/models/variants.yaml).
try:
    validate_config(config, source="config.yaml (with --config overrides)")
except ConfigError as e:
    raise WorkflowError(str(e)) from None

try:
    PRESET = preset_name(config)
except ConfigError as e:
    raise WorkflowError(f"preset: {e}") from None
PRESET_CFG = config["presets"][PRESET]
WITH_OPTIONAL = bool(config.get("with_optional", False))

# How jobs start their Python programs: `python -m fisa.engine.warm -m MODULE ...` is
# `python -m MODULE ...`, through one warm server per workflow when FISA_WARM=1 (most of a
# small-preset job is importing torch). Local execution only: under SLURM (and inside any
# SLURM job) every job starts cold. The switch is the environment, not the command, so
# switching executors reruns nothing (the command text is a rerun trigger).
PYTHON = "python -m fisa.engine.warm"
# A preset can refuse it (`presets.<P>.warm_start: false`: the rehearsal, whose benchmarks
# must measure the job, not the client).
os.environ["FISA_WARM"] = "1" if (config.get("warm_start", True) and PRESET_CFG.get("warm_start", True)
                                   and workflow.local_exec and not workflow.remote_exec) else "0"


def _stop_warm_servers(log):
    # a warm server exits as soon as its socket is gone (else after its idle time-out)
    for sock in Path(".snakemake/fisa-warm").glob("*.sock"):
        sock.unlink(missing_ok=True)


def _cancel_rate_limit_timers():
    # Snakemake's job rate limiter (`max-jobs-per-timespan`, 5 s in profiles/default) re-arms a
    # threading.Timer in each scheduling round; those threads are not daemons, so the interpreter
    # would wait for the last one (up to the timespan) before exiting. The workflow is over here.
    import threading

    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.cancel()


onsuccess:
    _stop_warm_servers(log)
    _cancel_rate_limit_timers()


onerror:
    _stop_warm_servers(log)
    _cancel_rate_limit_timers()
DATA_SOURCE = PRESET_CFG.get("data_source", "download")
RESULTS = f"results/{PRESET}"

# Resolve every (experiment, seed) once: a bad backbone/generator/schedule name fails here.
# The rule `run_config` writes each to results/<P>/configs/runs/<E>/seed<k>.yaml, the one
# file the programs read.
try:
    RESOLVED = {
        # an evaluation-only experiment (`weights_from`) reads the run folder of the one it names
        (name, seed): run_config(config, name, PRESET, seed,
                                 run_dir_of(PRESET, config["experiments"][name].get("weights_from", name), seed))
        for name in experiment_names(config, include_optional=True)
        for seed in experiment_seeds(config, name, PRESET)
    }
except ConfigError as e:
    raise WorkflowError(str(e)) from None
for (_name, _seed), _r in RESOLVED.items():
    _source = config["experiments"][_name].get("weights_from")
    if _source is not None and (_source not in config["experiments"] or (_source, _seed) not in RESOLVED
                                or config_hash(_r, ("variant", "model", "train"))
                                != config_hash(RESOLVED[(_source, _seed)], ("variant", "model", "train"))):
        raise WorkflowError(f"experiments.{_name}.weights_from: {_source!r} must be an experiment with the same "
                            f"variant, model and train config (and seeds); only eval.* may differ")
_any = next(iter(RESOLVED.values()))
DATA_ROOT = _any["data_root"].rstrip("/")   # $DETECTRON2_DATASETS applies (paper preset)
CACHE_DIR = _any["cache_dir"].rstrip("/")

with open(REPO / "analysis/targets.yaml") as _f:
    TARGETS = yaml.safe_load(_f)
for _target, _spec in TARGETS.items():
    for _key in ("experiments", "optional_experiments", "efficiency"):
        for _exp in _spec.get(_key, []) or []:
            if _exp not in config["experiments"]:
                raise WorkflowError(f"analysis/targets.yaml: {_target}.{_key}: experiment {_exp!r} "
                                    f"is not defined in config.yaml experiments")
TABLES = [t for t in TARGETS if t.startswith("table")]
FIGURES = [t for t in TARGETS if not t.startswith("table")]

ALL_DATASETS = list_datasets()  # the registry (fisa/data/registry.py) is the one list of datasets


# Config files are written by local rules (workflow/rules/configs.smk), never while the DAG is
# parsed. What the programs read (--run-config):
def run_config_path(experiment, seed):
    return f"{RESULTS}/configs/runs/{experiment}/seed{seed}.yaml"


def shapes_csv(experiment):
    """The shape rehearsal of one experiment (budget.smk): parameters, FLOPs, status."""
    return f"{RESULTS}/budget/shapes/{experiment}.csv"


def generator_config_path(generator):
    return f"{RESULTS}/configs/generators/{generator}.yaml"


# The whole config Snakemake resolved (config.yaml or --configfile, plus --config overrides), for
# the programs that read the matrix rather than one run (fetch, figures). Their rules take it as
# an `ancient` input, so rewriting it reruns nothing by itself.
EFFECTIVE_CONFIG = f"{RESULTS}/configs/config.yaml"
ENGINE_ARGS = f"--config {shlex.quote(EFFECTIVE_CONFIG)} --preset {shlex.quote(PRESET)}"

# Rerun triggers (params) beside the run config input: the sections that shape each output.
TRAIN_SECTIONS = ("variant", "model", "train")
EVAL_SECTIONS = TRAIN_SECTIONS + ("eval",)
EFFICIENCY_SECTIONS = EVAL_SECTIONS + ("efficiency",)


def file_key(payload):
    """What a config file's rule reruns on: its whole content but the code version (paths included)."""
    blob = json.dumps({k: v for k, v in payload.items() if k != "code_version"}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---- deterministic errors are not retried ---------------------------------------------------
# The programs exit 65 (bad input data) or 78 (bad config) on errors a retry cannot fix, 75 when
# pre-empted (checkpointed; resume), 1 otherwise. Snakemake retries every failed job (`retries`
# in the profile) whatever its exit code, so `guarded` wraps a command: on 65/78 it leaves a
# marker beside the log; a retry (attempt > 1) that finds the marker fails at once (no Python
# start-up) with the same code. A new `snakemake` invocation (attempt 1) runs the program again.
NO_RETRY_CODES = (65, 78)


def guarded(command):
    """`command` (a rule's shell string, with `{log}` defined) with the no-retry marker."""
    codes = "|".join(str(c) for c in NO_RETRY_CODES)
    return (
        'marker={log:q}.no-retry; '
        'if [ {resources.fisa_attempt} -gt 1 ] && [ -f "$marker" ]; then '
        'echo "not retried: the previous attempt failed with a deterministic error (exit $(cat "$marker")),'
        ' see {log}" >&2; exit "$(cat "$marker")"; fi; '
        'rm -f "$marker"; '
        f'{{{{ {command}; }}}} || {{{{ rc=$?; case $rc in {codes}) echo $rc > "$marker";; esac; exit $rc; }}}}'
    )


def seeds_of(experiment):
    """The seeds one experiment runs with under the preset (fisa.config.experiment_seeds: preset default, own `seeds`, seed spread)."""
    return experiment_seeds(config, experiment, PRESET)


def resolved(experiment, seed=None):
    """The resolved run config of `experiment` (first seed unless given)."""
    seed = seeds_of(experiment)[0] if seed is None else int(seed)
    return RESOLVED[(experiment, seed)]


def in_scope(experiment):
    """Non-optional experiments always; optional ones with --config with_optional=true."""
    return WITH_OPTIONAL or not is_optional(config["experiments"][experiment], PRESET)


def target_experiments(target):
    """Experiments a table/figure target reads; its optional ones only when asked for."""
    spec = TARGETS[target]
    exps = list(spec.get("experiments", []))
    if WITH_OPTIONAL:
        exps += list(spec.get("optional_experiments", []) or [])
    return exps


# ---- paths --------------------------------------------------------------------------------
def data_marker(dataset, stage="prepare"):
    return str(marker_path(DATA_ROOT, dataset, stage))  # fisa.utils.markers: the path fisa.data writes


def run_dir(experiment, seed):
    return f"{RESULTS}/runs/{experiment}/seed{seed}"


def trained_run(experiment, seed):
    """The run folder whose weights `experiment` evaluates: its own, or that of the experiment
    named by its `weights_from` (evaluation-only choices, e.g. the panoptic thresholds)."""
    return run_dir(config["experiments"][experiment].get("weights_from", experiment), seed)


def eval_json(experiment, seed, dataset):
    return f"{RESULTS}/eval/{experiment}/seed{seed}/{dataset}.json"


def efficiency_json(experiment):
    return f"{RESULTS}/efficiency/{experiment}.json"


def generator_marker(generator):
    """The file that says a generator's weights are in the cache (fetched or harness-trained)."""
    entry = PRESET_CFG["generators"][generator]
    if entry["source"] == "harness":
        return f"{CACHE_DIR}/generators/{generator}/done.json"
    return f"{CACHE_DIR}/.done/generator_{generator}.json"


def backbone_marker(backbone):
    return f"{CACHE_DIR}/.done/backbone_{backbone}.json"


def evals_of(experiments, datasets=None):
    """Evaluation JSONs of `experiments` x seeds x (their datasets, restricted to `datasets`)."""
    out = []
    for exp in experiments:
        for seed in seeds_of(exp):
            for ds in eval_datasets(config, exp, seed, PRESET):  # a seed-spread seed: its datasets only
                if datasets is None or ds in datasets:
                    out.append(eval_json(exp, seed, ds))
    return out


# ---- resources ----------------------------------------------------------------------------
def rule_resources(rule):
    """Snakemake/SLURM-plugin resources of `rule` from config.yaml (presets.<P>.resources).

    GPUs go through the plugin's `gpu` resource (it refuses GRES in slurm_extra). A
    multi-GPU job asks one task per GPU and is marked `mpi` so the plugin runs the job's
    command as is; that command then starts the tasks with `srun` (see `launcher`).
    """
    r = resources_for(config, rule, PRESET)
    gpus = int(r.get("gpus") or 0)
    cpus = int(r.get("cpus") or 1)
    res = {"mem_mb": int(r.get("mem_mb") or 1000), "runtime": int(r.get("runtime") or 60)}
    if r.get("partition"):
        res["slurm_partition"] = r["partition"]
    if r.get("constraint"):
        res["constraint"] = r["constraint"]
    extra = [r["slurm_extra"]] if r.get("slurm_extra") else []
    if rule in ("train", "train_generator"):
        # Pre-emption / time limit: SIGUSR1 five minutes before the end; the engine
        # checkpoints and exits 75, and the job is requeued (profile) or retried, resuming.
        extra.append("--signal=USR1@300")
    if extra:
        res["slurm_extra"] = " ".join(extra)
    if gpus:
        res["gpu"] = gpus
        if r.get("gpu_model"):
            res["gpu_model"] = r["gpu_model"]
    # the attempt number, for `guarded` (Snakemake passes it to resource callables only)
    res["fisa_attempt"] = lambda wildcards, attempt: attempt
    if gpus > 1:
        res.update(tasks=gpus, tasks_per_gpu=1, mpi="srun", cpus_per_task=max(1, cpus // gpus))
    else:
        res["cpus_per_task"] = cpus
    return res


def job_group(rule):
    """The `group:` of `rule`'s jobs (presets.<P>.resources.<rule>.group, default none): with
    --profile slurm, jobs of one group go to SLURM together, `group-components` of them per
    SLURM job (slurm/config.yaml). Ignored when running locally."""
    return resources_for(config, rule, PRESET).get("group")


def rule_threads(rule):
    return int(resources_for(config, rule, PRESET).get("cpus") or 1)


def launcher(rule):
    """How to start the Python entry point: one process, or one per GPU.

    Under SLURM `srun` starts one task per GPU inside the allocation; outside SLURM (a
    workstation with several GPUs) `torchrun` does. fisa.engine.distributed reads either.
    """
    gpus = int(resources_for(config, rule, PRESET).get("gpus") or 0)
    if gpus <= 1:
        return PYTHON
    return (f'$(if [ -n "${{SLURM_JOB_ID:-}}" ]; then echo "srun --ntasks={gpus} --kill-on-bad-exit=1 python"; '
            f'else echo "torchrun --standalone --nproc_per_node={gpus}"; fi)')


def log_path(rule, *parts):
    return f"{RESULTS}/logs/{rule}/" + "/".join(str(p) for p in parts) + ".log"


def bench_path(rule, *parts):
    """Snakemake benchmark (wall time, max RSS, CPU) of one job: for tuning config resources."""
    return f"{RESULTS}/benchmarks/{rule}/" + "/".join(str(p) for p in parts) + ".tsv"
