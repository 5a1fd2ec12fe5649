"""The config resolves every experiment under both presets, and bad values are named."""
import pytest

from fisa.config import ConfigError, config_hash, load_config, resolve_experiment, experiment_names


@pytest.fixture(scope="module")
def config():
    return load_config()


@pytest.mark.parametrize("preset", ["paper", "small"])
def test_every_experiment_resolves(config, preset):
    for name in experiment_names(config, include_optional=True):
        r = resolve_experiment(config, name, preset=preset)
        assert r["experiment"] == name and r["preset"] == preset
        assert isinstance(r["train"]["iterations"], int)
        assert "model" in r["model"]["clip"]


def test_schedules_map_to_iterations(config):
    assert resolve_experiment(config, "fisa", "paper")["train"]["iterations"] == 10000
    assert resolve_experiment(config, "fisa_main", "paper")["train"]["iterations"] == 25000
    assert resolve_experiment(config, "baseline", "paper")["train"]["iterations"] == 0
    assert resolve_experiment(config, "iters_100", "paper")["train"]["iterations"] == 100
    assert resolve_experiment(config, "iters_100", "small")["train"]["iterations"] == 2


def test_backbone_mapping_is_per_preset(config):
    assert resolve_experiment(config, "fisa", "paper")["model"]["clip"]["model"] == "ViT-L-14-336"
    assert resolve_experiment(config, "clip_vit_b16", "paper")["model"]["clip"]["model"] == "ViT-B-16"
    assert resolve_experiment(config, "fisa", "small")["model"]["clip"]["pretrained"] is None


def test_hash_ignores_paths_but_not_results(config):
    a = resolve_experiment(config, "fisa", "paper")
    b = dict(a, data_root="/elsewhere")
    assert config_hash(a) == config_hash(b)
    c = resolve_experiment(config, "adapter_1", "paper")
    assert config_hash(a) != config_hash(c)


def test_unknown_names_are_reported(config):
    with pytest.raises(ConfigError, match="unknown experiment 'nope'"):
        resolve_experiment(config, "nope")
    with pytest.raises(ConfigError, match="unknown preset 'tiny'"):
        resolve_experiment(config, "fisa", preset="tiny")
    bad = load_config(overrides={"experiments": {"x": {"variant": "fisa", "model": {"backbone": "vit_h"}}}},
                      validate=False)
    with pytest.raises(ConfigError, match=r"experiments\.x\.model\.backbone: 'vit_h'"):
        resolve_experiment(bad, "x")
