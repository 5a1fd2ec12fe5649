"""The harness configuration: load `config.yaml`, validate it, resolve one experiment.

`config.yaml` holds presets (`paper`, `small`) and the experiment matrix. An
experiment names logical parts (`backbone: vit_l14_336`, `generator: swin_b`,
`schedule: ablation`); the preset maps them to concrete models and sizes. So the
same experiment names and the same code run at paper scale and at toy scale.

`resolve_experiment` returns the fully resolved config of one (experiment, seed);
`run_config` adds the resolved checkpoint paths and the code version. The workflow writes
it once per run (`results/<preset>/configs/runs/<experiment>/seed<k>.yaml`, rule
`run_config`), every program reads it with `load_run_config` and nothing else, and the
training program copies it into its run folder as `run_config.yaml`. Every key the
programs read is in it (preset `defaults` hold every default; the schema's
`$defs/run_config` requires each of them), so there are no hidden defaults in code.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Mapping

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "config.yaml"
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
VARIANT_TABLE = Path(__file__).resolve().parent / "models" / "variants.yaml"   # fisa.models.variants

# Keys that locate files rather than determine results: left out of the config hash,
# so moving the data root does not make Snakemake retrain everything.
# The code version is recorded, not hashed: a new commit does not retrain everything.
_NON_RESULT_KEYS = ("data_root", "cache_dir", "device", "resources", "checkpoints", "code_version")
# Sections of a run config whose every key the schema lists and the run config must hold.
RUN_SECTIONS = ("model", "train", "eval", "efficiency")
# A YAML trap: `1e-3` (no dot) is a string to YAML 1.1, so a number is refused.
_YAML_FLOAT_STRING = re.compile(r"^[+-]?\d+(\.\d*)?[eE][+-]?\d+$")


class ConfigError(ValueError):
    """A config value is missing or wrong; the message names the key."""


def load_config(path: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None,
                validate: bool = True) -> dict:
    """Read `config.yaml` (or `path`), apply `overrides` (deep-merged), validate against the schema."""
    path = Path(path) if path else DEFAULT_CONFIG
    config = _read_yaml(path, f"config file not found: {path}")
    if overrides:
        config = deep_merge(config, overrides)
    if validate:
        validate_config(config, source=str(path))
    return config


@functools.cache
def _schema() -> dict:
    """The config schema with the `variant` enum filled in from the variant table and the
    `dataset` enum from the data registry."""
    from fisa.data.registry import list_datasets  # light: no torch

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    schema["$defs"]["dataset"] = {"enum": list_datasets(), "description": "a dataset of fisa.data.registry"}
    # Read here, not through fisa.models (whose package imports torch): Snakemake parses this.
    variants = list(yaml.safe_load(VARIANT_TABLE.read_text()))
    schema["$defs"]["variant"] = {"enum": variants,
                                  "description": "a row of fisa/models/variants.yaml"}
    return schema


def _run_config_schema() -> dict:
    """`$defs/run_config` of the schema, each section closed and required key by key."""
    schema = copy.deepcopy(_schema())
    defs = schema["$defs"]
    run = copy.deepcopy(defs["run_config"])
    preset = defs["preset"]["properties"]
    for section in RUN_SECTIONS:
        closed = copy.deepcopy(defs[section])
        if section == "model":  # the concrete entries the logical names resolve to
            closed["properties"]["clip"] = preset["backbones"]["additionalProperties"]
            closed["properties"]["generator_config"] = preset["generators"]["additionalProperties"]
        closed["required"] = sorted(closed["properties"])
        run["properties"][section] = closed
    return {"$schema": schema["$schema"], "$defs": defs, **run}


def _yaml_hint(error) -> str:
    """A hint for the YAML traps behind a type error (`1e-3` is read as a string)."""
    if isinstance(error.instance, str) and _YAML_FLOAT_STRING.match(error.instance.strip()):
        mantissa, exponent = re.split("[eE]", error.instance.strip())
        fixed = (mantissa if "." in mantissa else mantissa + ".0") + "e" + exponent
        return f" (YAML reads {error.instance} as a string: write {fixed})"
    return ""


def _check(instance: Mapping[str, Any], schema: dict, source: str, what: str) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}{_yaml_hint(e)}"
                 for e in errors[:10]]
        raise ConfigError(f"{source}: invalid {what}:\n" + "\n".join(lines))


def validate_config(config: Mapping[str, Any], source: str = "config") -> None:
    """Validate against `workflow/schemas/config.schema.yaml`; the error names the offending key."""
    _check(config, _schema(), source, "configuration")


def validate_run_config(run: Mapping[str, Any], source: str = "run config") -> None:
    """Validate a run config (`run_config`): every section holds exactly the schema's keys."""
    _check(run, _run_config_schema(), source, "run config")


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict:
    """Return `base` updated recursively by `override` (neither is modified)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def preset_name(config: Mapping[str, Any], preset: str | None = None) -> str:
    """The preset in force: `preset` if given, else the config's `preset` key."""
    name = preset or config.get("preset", "paper")
    if name not in config.get("presets", {}):
        raise ConfigError(f"unknown preset {name!r}; config defines: {sorted(config.get('presets', {}))}")
    return name


def resolve_experiment(config: Mapping[str, Any], experiment: str, preset: str | None = None,
                       seed: int = 0) -> dict:
    """Resolve `experiment` under `preset` into the full config one run uses.

    Returns a dict with keys: experiment, preset, seed, variant, datasets, optional,
    model (with `clip` and `generator_config` resolved to concrete entries), train (with
    `iterations` resolved from the schedule), eval, efficiency, data_root, cache_dir, device.
    Every key of the sections comes from config.yaml (the preset's `defaults` hold them all).
    """
    preset = preset_name(config, preset)
    p = config["presets"][preset]
    experiments = config.get("experiments", {})
    if experiment not in experiments:
        raise ConfigError(f"unknown experiment {experiment!r}; config defines: {sorted(experiments)}")
    exp = experiments[experiment]

    sections = {k: exp[k] for k in ("model", "train", "eval", "efficiency") if k in exp}
    merged = deep_merge(p.get("defaults", {}), sections)
    merged = deep_merge(merged, exp.get("per_preset", {}).get(preset, {}))

    model = merged.setdefault("model", {})
    backbone = model.get("backbone")
    if backbone not in p.get("backbones", {}):
        raise ConfigError(f"experiments.{experiment}.model.backbone: {backbone!r} is not in "
                          f"presets.{preset}.backbones ({sorted(p.get('backbones', {}))})")
    generator = model.get("generator")
    if generator not in p.get("generators", {}):
        raise ConfigError(f"experiments.{experiment}.model.generator: {generator!r} is not in "
                          f"presets.{preset}.generators ({sorted(p.get('generators', {}))})")
    model["clip"] = copy.deepcopy(p["backbones"][backbone])
    model["generator_config"] = copy.deepcopy(p["generators"][generator])

    train = merged.setdefault("train", {})
    if "iterations" not in train:
        schedule = train.get("schedule", "none")
        if schedule == "none":
            train["iterations"] = 0
        elif schedule in p.get("schedules", {}):
            train["iterations"] = int(p["schedules"][schedule])
        else:
            raise ConfigError(f"experiments.{experiment}.train.schedule: {schedule!r} is not 'none' "
                              f"nor in presets.{preset}.schedules ({sorted(p.get('schedules', {}))})")

    data_root = _data_root(p, preset)

    return {
        "experiment": experiment,
        "preset": preset,
        "seed": int(seed),
        "variant": exp["variant"],
        "datasets": list(exp["datasets"]),
        "optional": is_optional(exp, preset),
        "model": model,
        "train": train,
        "eval": merged["eval"],
        "efficiency": merged["efficiency"],
        "data_root": str(data_root),
        "cache_dir": str(p["cache_dir"]),
        "device": p["device"],
    }


@functools.cache
def code_version(repo: Path = REPO_ROOT) -> str:
    """The checked-out commit, with `-dirty` if tracked files differ; 'unknown' outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_dir_of(preset: str, experiment: str, seed: int, results: str = "results") -> str:
    """The run folder of (experiment, seed): results/<preset>/runs/<experiment>/seed<k>."""
    return f"{results}/{preset}/runs/{experiment}/seed{int(seed)}"


def run_config(config: Mapping[str, Any], experiment: str, preset: str | None = None, seed: int = 0,
               run_dir: str | None = None) -> dict:
    """The run config of (experiment, seed): `resolve_experiment` plus `checkpoints` (the run
    folder, its final model, and where the backbone and generator weights are read from) and
    `code_version` (the commit that resolved it; not part of the config hash). Validated."""
    r = resolve_experiment(config, experiment, preset, seed)
    run_dir = run_dir or run_dir_of(r["preset"], experiment, seed)
    cache, model = r["cache_dir"], r["model"]
    clip, gen = model["clip"], model["generator_config"]
    if clip.get("source") == "harness":
        backbone = f"{cache}/clip/{model['backbone']}.pt"
    else:
        backbone = f"{cache}/open_clip" if clip["pretrained"] else None
    generator = f"{cache}/huggingface" if gen["source"] == "hub" else f"{cache}/generators/{model['generator']}"
    r["checkpoints"] = {"run_dir": run_dir, "model_final": f"{run_dir}/model_final.pt",
                        "backbone": backbone, "generator": generator}
    r["code_version"] = code_version()
    validate_run_config(r, f"run config of experiment {experiment!r} (preset {r['preset']}, seed {seed})")
    return r


def generator_run_config(config: Mapping[str, Any], generator: str, preset: str | None = None,
                         seed: int = 0) -> dict:
    """The run config of `python -m fisa.engine.train_generator`: the generator's architecture
    entry (a `base:` entry takes its base's), its training schedule (the preset's
    `defaults.train` overlaid by the generator's `train`), paths, device, code version."""
    preset = preset_name(config, preset)
    p = config["presets"][preset]
    gens = p["generators"]
    if generator not in gens:
        raise ConfigError(f"generator {generator!r}: not in presets.{preset}.generators ({sorted(gens)})")
    entry = gens[generator]
    arch = {k: v for k, v in entry.items() if k != "train"}
    if entry.get("base"):
        if entry["base"] not in gens:
            raise ConfigError(f"presets.{preset}.generators.{generator}.base: {entry['base']!r} is not a generator")
        arch = {k: v for k, v in gens[entry["base"]].items() if k != "train"}
    if "train" not in entry:
        raise ConfigError(f"presets.{preset}.generators.{generator}.train: no training schedule "
                          "({iterations, batch_size, lr}) for this generator")
    train = deep_merge(p["defaults"]["train"], entry["train"])
    train.pop("schedule", None)
    cache = str(p["cache_dir"])
    out = {"generator": generator, "preset": preset, "seed": int(seed), "architecture": arch, "train": train,
           "data_root": str(_data_root(p, preset)), "cache_dir": cache, "device": p["device"],
           "checkpoints": {"output_dir": f"{cache}/generators/{generator}"}, "code_version": code_version()}
    return out


def _read_yaml(path: Path, missing: str) -> Any:
    """`path` parsed as YAML; a missing file or invalid YAML is a ConfigError (`missing`: its message)."""
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(missing) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None


def load_run_config(path: str | os.PathLike) -> dict:
    """Read a run config file written by the workflow (`run_config` / `generator_run_config`);
    an experiment's is validated against the schema (`$defs/run_config`)."""
    path = Path(path)
    run = _read_yaml(path, f"{path}: run config not found (the workflow's rule `run_config` writes it)")
    if not isinstance(run, dict):
        raise ConfigError(f"{path}: a run config is a mapping, got {type(run).__name__}")
    if "experiment" in run:
        validate_run_config(run, str(path))
    return run


def write_run_config(path: str | os.PathLike, run: Mapping[str, Any]) -> None:
    """Write a run config as YAML, atomically (a temporary file renamed into place)."""
    from fisa.utils.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(dict(run), sort_keys=False))


def _data_root(p: Mapping[str, Any], preset: str) -> str:
    """The preset's data root ($DETECTRON2_DATASETS overrides the paper preset's)."""
    if preset == "paper" and os.environ.get("DETECTRON2_DATASETS"):
        return os.environ["DETECTRON2_DATASETS"]
    return p["data_root"]
def is_optional(exp: Mapping[str, Any], preset: str) -> bool:
    """An experiment's `optional`: true/false, or the list of presets on which it is optional."""
    flag = exp.get("optional", False)
    return preset in flag if isinstance(flag, list) else bool(flag)


def config_hash(resolved: Mapping[str, Any], sections: tuple[str, ...] | None = None) -> str:
    """A short, stable hash of what determines a result (paths and devices excluded)."""
    payload = {k: v for k, v in resolved.items() if k not in _NON_RESULT_KEYS}
    if sections is not None:
        payload = {k: payload[k] for k in sections if k in payload}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def experiment_names(config: Mapping[str, Any], include_optional: bool = False) -> list[str]:
    """Experiment names in config order (optional ones only if asked)."""
    return [name for name, exp in config.get("experiments", {}).items()
            if include_optional or not exp.get("optional", False)]


def resources_for(config: Mapping[str, Any], rule: str, preset: str | None = None) -> dict:
    """Per-rule resources of the preset: the rule's entry over `default`."""
    p = config["presets"][preset_name(config, preset)]
    res = p.get("resources", {})
    return {**res.get("default", {}), **res.get(rule, {})}


def overrides_from(pairs: list[str]) -> dict:
    """`a.b.c=value` strings (value parsed as YAML) -> nested dict."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE")
        key, value = pair.split("=", 1)
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


def main(argv=None) -> None:
    """`python -m fisa.config`: write one run config by hand (the workflow's rules do it otherwise).

        python -m fisa.config --preset small --experiment fisa --seed 0 --out run.yaml
        python -m fisa.config --preset small --generator swin_b --out gen.yaml
    """
    import argparse
    import sys

    ap = argparse.ArgumentParser(description=main.__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None, help="config.yaml (default: the repository's)")
    ap.add_argument("--preset", default=None, help="preset name (default: the config's `preset`)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                    help="override a config value, e.g. --set presets.small.defaults.train.lr=1.0e-3")
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--experiment")
    what.add_argument("--generator")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-dir", default=None, help="default: results/<preset>/runs/<experiment>/seed<k>")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        config = load_config(args.config, overrides_from(args.set))
        if args.experiment:
            run = run_config(config, args.experiment, args.preset, args.seed, args.run_dir)
        else:
            run = generator_run_config(config, args.generator, args.preset, args.seed)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(78)
    write_run_config(args.out, run)


if __name__ == "__main__":
    main()
# ---- seeds per preset (docs/analysis.md, "Seeds") ------------------------------------------
# `presets.<P>.seeds` is the preset's default (the paper preset: one seed, as the paper reports
# single runs). `presets.<P>.seed_spread` names experiments that run more seeds to measure the
# seed spread (analysis/: mean, sample std, n and a 95 % Student-t interval per table cell);
# their added seeds are evaluated only on `seed_spread.datasets`, the cells the spread is
# measured on. An experiment's own `seeds` overrides the preset default; the top-level
# `seeds` applies to a preset without `seeds`.
def base_seeds(config: Mapping[str, Any], experiment: str, preset: str | None = None) -> list[int]:
    """The seeds `experiment` runs under `preset` before the seed spread (evaluated on every dataset)."""
    p = config["presets"][preset_name(config, preset)]
    if experiment not in config["experiments"]:
        raise ConfigError(f"unknown experiment {experiment!r}")
    exp = config["experiments"][experiment]
    if "seeds" in exp:
        return [int(s) for s in exp["seeds"]]
    return [int(s) for s in (p["seeds"] if "seeds" in p else config["seeds"])]


def experiment_seeds(config: Mapping[str, Any], experiment: str, preset: str | None = None) -> list[int]:
    """Every seed `experiment` runs under `preset`: its base seeds, then the seed spread's others."""
    seeds = base_seeds(config, experiment, preset)
    preset = preset_name(config, preset)
    spread = config["presets"][preset].get("seed_spread")
    unknown = sorted(set(spread["experiments"]) - set(config["experiments"])) if spread else []
    if unknown:
        raise ConfigError(f"presets.{preset}.seed_spread.experiments: {unknown} not defined in experiments")
    if spread and experiment in spread["experiments"]:
        seeds += [int(s) for s in spread["seeds"] if int(s) not in seeds]
    return seeds


def eval_datasets(config: Mapping[str, Any], experiment: str, seed: int, preset: str | None = None) -> list[str]:
    """Datasets seed `seed` of `experiment` is evaluated on (a seed-spread seed: only the spread's datasets)."""
    datasets = list(config["experiments"][experiment]["datasets"])
    if int(seed) in base_seeds(config, experiment, preset):
        return datasets
    if int(seed) not in experiment_seeds(config, experiment, preset):
        raise ConfigError(f"experiments.{experiment}: seed {seed} is not one of its seeds under preset "
                          f"{preset_name(config, preset)!r} ({experiment_seeds(config, experiment, preset)})")
    spread = config["presets"][preset_name(config, preset)]["seed_spread"]
    return [d for d in datasets if d in spread["datasets"]]
