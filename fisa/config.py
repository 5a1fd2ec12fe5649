"""The harness configuration: load `config.yaml`, validate it, resolve one experiment.

`config.yaml` holds presets (`paper`, `small`) and the experiment matrix. An
experiment names logical parts (`backbone: vit_l14_336`, `generator: swin_b`,
`schedule: ablation`); the preset maps them to concrete models and sizes. So the
same experiment names and the same code run at paper scale and at toy scale.

`resolve_experiment` returns the fully resolved config a run works from; it is
written in full beside every run (no hidden inheritance).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "config.yaml"
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"

# Keys that locate files rather than determine results: left out of the config hash,
# so moving the data root does not make Snakemake retrain everything.
_NON_RESULT_KEYS = ("data_root", "cache_dir", "device", "resources")


class ConfigError(ValueError):
    """A config value is missing or wrong; the message names the key."""


def load_config(path: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None,
                validate: bool = True) -> dict:
    """Read `config.yaml` (or `path`), apply `overrides` (deep-merged), validate against the schema."""
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if overrides:
        config = deep_merge(config, overrides)
    if validate:
        validate_config(config, source=str(path))
    return config


def validate_config(config: Mapping[str, Any], source: str = "config") -> None:
    """Validate against `workflow/schemas/config.schema.yaml`; the error names the offending key."""
    import jsonschema

    if not SCHEMA_PATH.exists():
        return
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors[:10]]
        raise ConfigError(f"{source}: invalid configuration:\n" + "\n".join(lines))


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
    model (with `clip` and `generator` resolved to concrete entries), train (with
    `iterations` resolved from the schedule), eval, efficiency, data_root, cache_dir, device.
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

    data_root = p["data_root"]
    if preset == "paper" and os.environ.get("DETECTRON2_DATASETS"):
        data_root = os.environ["DETECTRON2_DATASETS"]

    return {
        "experiment": experiment,
        "preset": preset,
        "seed": int(seed),
        "variant": exp["variant"],
        "datasets": list(exp.get("datasets", [])),
        "optional": bool(exp.get("optional", False)),
        "model": model,
        "train": train,
        "eval": merged.get("eval", {}),
        "efficiency": merged.get("efficiency", {}),
        "data_root": str(data_root),
        "cache_dir": str(p.get("cache_dir", "resources/checkpoints")),
        "device": p.get("device", "cpu"),
    }


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
