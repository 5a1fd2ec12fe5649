# Shared state of the workflow: the validated config, the preset in force, the targets
# of analysis/targets.yaml, paths, per-rule resources. Plain Python; the rules use it.
import os
import re
import shlex
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError

from fisa.config import (ConfigError, config_hash, experiment_names, preset_name,
                         resolve_experiment, resources_for, validate_config)
from fisa.config import eval_datasets, experiment_seeds

# Paths of the repository (not of --directory): the schema and the targets travel with the code.
REPO = Path(workflow.basedir)
SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")
# Conda environment of every job (with --software-deployment-method conda).
CONDA_ENV = str(REPO / "envs/fisa.yaml")

# `--config with_optional=true` arrives as a string; accept the usual spellings.
if isinstance(config.get("with_optional"), str):
    _flag = config["with_optional"].strip().lower()
    if _flag not in ("true", "false", "yes", "no", "1", "0"):
        raise WorkflowError(f"with_optional: {config['with_optional']!r} is not true/false")
    config["with_optional"] = _flag in ("true", "yes", "1")

# Fail before any job is submitted, naming the offending key (fisa's message lists the
# key paths; snakemake's validate then fills in the schema's defaults).
try:
    validate_config(config, source="config.yaml (with --config overrides)")
except ConfigError as e:
    raise WorkflowError(str(e)) from None
validate(config, SCHEMA, set_default=True)

try:
    PRESET = preset_name(config)
except ConfigError as e:
    raise WorkflowError(f"preset: {e}") from None
PRESET_CFG = config["presets"][PRESET]
WITH_OPTIONAL = bool(config.get("with_optional", False))
DATA_SOURCE = PRESET_CFG.get("data_source", "download")
RESULTS = f"results/{PRESET}"

# Resolve every experiment once: a bad backbone/generator/schedule name fails here.
try:
    RESOLVED = {
        (name, seed): resolve_experiment(config, name, PRESET, seed)
        for name in experiment_names(config, include_optional=True)
        for seed in experiment_seeds(config, name, PRESET)
    }
except ConfigError as e:
    raise WorkflowError(str(e)) from None
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

ALL_DATASETS = ["coco", "ade150", "ade847", "pc59", "pc459", "mapillary", "refcoco", "refcocoplus"]


# The engine reads the config file itself: give it the config Snakemake resolved (config.yaml
# or --configfile, plus --config overrides), rewritten only when it changed. Its path is fixed
# per preset, so it is not a rerun trigger; per-experiment hashes (params) are.
EFFECTIVE_CONFIG = f".snakemake/fisa/config.{PRESET}.yaml"


def _write_effective_config():
    text = yaml.safe_dump(dict(config), sort_keys=False)
    path = Path(EFFECTIVE_CONFIG)
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)   # atomic: concurrent jobs parsing the Snakefile never see half a file


_write_effective_config()
ENGINE_ARGS = f"--config {shlex.quote(EFFECTIVE_CONFIG)} --preset {shlex.quote(PRESET)}"


def seeds_of(experiment):
    """The seeds one experiment runs with under the preset (fisa.config.experiment_seeds: preset default, own `seeds`, seed spread)."""
    return experiment_seeds(config, experiment, PRESET)


def resolved(experiment, seed=None):
    """The resolved run config of `experiment` (first seed unless given)."""
    seed = seeds_of(experiment)[0] if seed is None else int(seed)
    return RESOLVED[(experiment, seed)]


def in_scope(experiment):
    """Non-optional experiments always; optional ones with --config with_optional=true."""
    return WITH_OPTIONAL or not config["experiments"][experiment].get("optional", False)


def target_experiments(target):
    """Experiments a table/figure target reads; its optional ones only when asked for."""
    spec = TARGETS[target]
    exps = list(spec.get("experiments", []))
    if WITH_OPTIONAL:
        exps += list(spec.get("optional_experiments", []) or [])
    return exps


# ---- paths --------------------------------------------------------------------------------
def data_marker(dataset, stage="prepare"):
    return f"{DATA_ROOT}/.fisa/{dataset}.{stage}.done"


def run_dir(experiment, seed):
    return f"{RESULTS}/runs/{experiment}/seed{seed}"


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
    if gpus > 1:
        res.update(tasks=gpus, tasks_per_gpu=1, mpi="srun", cpus_per_task=max(1, cpus // gpus))
    else:
        res["cpus_per_task"] = cpus
    return res


def rule_threads(rule):
    return int(resources_for(config, rule, PRESET).get("cpus") or 1)


def launcher(rule):
    """How to start the Python entry point: one process, or one per GPU.

    Under SLURM `srun` starts one task per GPU inside the allocation; outside SLURM (a
    workstation with several GPUs) `torchrun` does. fisa.engine.distributed reads either.
    """
    gpus = int(resources_for(config, rule, PRESET).get("gpus") or 0)
    if gpus <= 1:
        return "python"
    return (f'$(if [ -n "${{SLURM_JOB_ID:-}}" ]; then echo "srun --ntasks={gpus} --kill-on-bad-exit=1 python"; '
            f'else echo "torchrun --standalone --nproc_per_node={gpus}"; fi)')


def log_path(rule, *parts):
    return f"{RESULTS}/logs/{rule}/" + "/".join(str(p) for p in parts) + ".log"


def bench_path(rule, *parts):
    """Snakemake benchmark (wall time, max RSS, CPU) of one job: for tuning config resources."""
    return f"{RESULTS}/benchmarks/{rule}/" + "/".join(str(p) for p in parts) + ".tsv"
