"""Seeds per preset (fisa.config.experiment_seeds / eval_datasets), which the tables' n comes from."""
from __future__ import annotations

import copy

import pytest

from fisa.config import ConfigError, eval_datasets, experiment_seeds, load_config


@pytest.fixture(scope="module")
def config():
    return load_config()


def test_presets_state_their_seeds(config):
    # paper: one seed everywhere (the paper reports single runs)
    assert {tuple(experiment_seeds(config, e, "paper")) for e in config["experiments"]} == {(0,)}
    # small: the seed spread on Tab. 3a's experiments and Tab. 1's ADE-150 cell, one seed elsewhere
    spread = {"baseline", "seve", "seve_full_finetune", "fisa", "fisa_main"}
    for e in config["experiments"]:
        assert experiment_seeds(config, e, "small") == ([0, 1, 2] if e in spread else [0]), e


def test_added_seeds_are_evaluated_on_the_spread_datasets_only(config):
    assert eval_datasets(config, "fisa_main", 0, "small") == config["experiments"]["fisa_main"]["datasets"]
    assert eval_datasets(config, "fisa_main", 1, "small") == ["ade150"]
    assert eval_datasets(config, "fisa", 2, "small") == ["ade150"]                # not refcoco / refcocoplus
    with pytest.raises(ConfigError, match=r"experiments.fisa: seed 7 is not one of its seeds"):
        eval_datasets(config, "fisa", 7, "small")


def test_precedence_and_errors(config):
    c = copy.deepcopy(config)
    c["experiments"]["lora_r64"]["seeds"] = [3, 4]                  # an experiment's own seeds win over the preset's
    assert experiment_seeds(c, "lora_r64", "small") == [3, 4]
    c["experiments"]["seve"]["seeds"] = [5]                         # ... and the spread adds to them
    assert experiment_seeds(c, "seve", "small") == [5, 0, 1, 2]
    assert eval_datasets(c, "seve", 5, "small") == ["ade150"] and eval_datasets(c, "seve", 1, "small") == ["ade150"]
    del c["presets"]["paper"]["seeds"]
    c["seeds"] = [8]                                                # the top-level list: a preset without `seeds`
    assert experiment_seeds(c, "fisa", "paper") == [8]
    c["presets"]["small"]["seed_spread"]["experiments"].append("sevee")
    with pytest.raises(ConfigError, match=r"presets.small.seed_spread.experiments: \['sevee'\] not defined"):
        experiment_seeds(c, "fisa", "small")
