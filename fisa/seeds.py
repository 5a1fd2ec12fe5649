"""Which seeds each experiment runs, and on which datasets each seed is evaluated, per preset.

`presets.<P>.seeds` is the preset's default (the paper preset: one seed, as the paper
reports single runs). `presets.<P>.seed_spread` names experiments that run more seeds to
measure the seed spread (analysis/: mean, sample std, n and a 95 % Student-t interval per
table cell); their added seeds are evaluated only on `seed_spread.datasets`, the cells the
spread is measured on, so the spread costs trainings but few evaluations. An experiment's
own `seeds` (config.yaml `experiments.<E>.seeds`) overrides the preset default; the
top-level `seeds` applies to a preset without `seeds`.
"""
from __future__ import annotations

from typing import Any, Mapping

from fisa.config import ConfigError, preset_name


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
