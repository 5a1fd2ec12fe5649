"""The config resolves every experiment under both presets, and bad values are named."""
import copy

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


# ---- the run config (issue 15: resolve once) ----------------------------------------------------
import ast
import re
import subprocess
import sys
from pathlib import Path

import yaml

from fisa.config import (RUN_SECTIONS, load_run_config, run_config, validate_config, validate_run_config,
                         write_run_config)

REPO = Path(__file__).resolve().parent.parent


def _schema_keys(section):
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    return set(schema["$defs"][section]["properties"])


@pytest.mark.parametrize("preset", ["paper", "small"])
def test_run_config_holds_every_schema_key_and_nothing_else(config, preset):
    for name in experiment_names(config, include_optional=True):
        run = run_config(config, name, preset, seed=0)
        for section in RUN_SECTIONS:
            extra = {"clip", "generator_config"} if section == "model" else set()
            assert set(run[section]) == _schema_keys(section) | extra, (name, section)
        assert run["checkpoints"]["run_dir"] == f"results/{preset}/runs/{name}/seed0"
        assert run["checkpoints"]["model_final"].endswith(f"{name}/seed0/model_final.pt")
        assert run["code_version"]


def test_run_config_extra_or_missing_key_fails_naming_it(config, tmp_path):
    run = run_config(config, "fisa", "small")
    bad = copy.deepcopy(run)
    bad["train"]["lr_warmup"] = 10            # a key the schema does not know
    with pytest.raises(ConfigError, match=r"train: Additional properties are not allowed \('lr_warmup'"):
        validate_run_config(bad)
    bad = copy.deepcopy(run)
    del bad["train"]["log_every"]             # a default the code would otherwise have to invent
    path = tmp_path / "run.yaml"
    write_run_config(path, bad)
    with pytest.raises(ConfigError, match=rf"(?s){re.escape(str(path))}: .*train: 'log_every' is a required property"):
        load_run_config(path)
    # config.yaml refuses it too, before any run config exists
    cfg = copy.deepcopy(config)
    cfg["presets"]["small"]["defaults"]["train"]["lr_warmup"] = 10
    with pytest.raises(ConfigError, match=r"presets\.small\.defaults\.train: .*'lr_warmup' was unexpected"):
        validate_config(cfg)


def _section_of(node):
    """'train' for an expression X["train"] (a run config's section), else None."""
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value in RUN_SECTIONS:
        return node.slice.value
    return None


def _keys_read(path):
    """(section, key) pairs a module reads: resolved["train"]["key"], or NAME["key"] / NAME.get("key")
    where the same function assigned NAME = resolved["train"] (the engine's `t`, `ev`, `eff`)."""
    found = set()
    for fn in ast.walk(ast.parse(path.read_text())):
        if not isinstance(fn, ast.FunctionDef):
            continue
        names = {}
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and _section_of(node.value):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        names[target.id] = _section_of(node.value)
        for node in ast.walk(fn):
            target = key = None
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                target, key = node.value, node.slice.value
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                  and node.args and isinstance(node.args[0], ast.Constant)):
                target, key = node.func.value, node.args[0].value
            if not isinstance(key, str):
                continue
            if isinstance(target, ast.Name) and target.id in names:
                found.add((names[target.id], key))
            elif _section_of(target):
                found.add((_section_of(target), key))
    return found


def test_every_config_key_the_engine_reads_is_in_the_schema():
    """A key read in code but not in the schema (so not in any run config) fails here."""
    read = set()
    for name in ("train", "evaluate", "efficiency", "train_generator", "cli", "run_model"):
        read |= _keys_read(REPO / "fisa" / "engine" / f"{name}.py")
    assert ("train", "log_every") in read and ("eval", "max_images") in read   # the scan sees them
    model_extra = {"clip", "generator_config"}
    unknown = {(s, k) for s, k in read if k not in _schema_keys(s) | (model_extra if s == "model" else set())}
    assert not unknown, f"config keys read by the engine but missing from the schema: {sorted(unknown)}"
    # ...and the scan would catch one
    probe = "def f(run):\n    t = run['train']\n    return t.get('no_such_key'), run['eval']['nor_this']\n"
    assert _keys_read_text(probe) == {("train", "no_such_key"), ("eval", "nor_this")}


def _keys_read_text(text):
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(text)
    try:
        return _keys_read(Path(f.name))
    finally:
        Path(f.name).unlink()


def test_a_default_changed_in_config_yaml_reaches_the_run_config_and_the_loop(tmp_path):
    """Change defaults in config.yaml -> `python -m fisa.config` writes them -> the training loop uses them."""
    from fisa.engine.train import loop_config

    text = (REPO / "config.yaml").read_text()
    small = text.index("  small:")
    head, tail = text[:small], text[small:]
    assert "log_every: 20" in tail and "micro_batch_size: null" in tail
    tail = tail.replace("log_every: 20", "log_every: 7", 1).replace("micro_batch_size: null", "micro_batch_size: 2", 1)
    (tmp_path / "config.yaml").write_text(head + tail)
    out = tmp_path / "run.yaml"
    subprocess.run([sys.executable, "-m", "fisa.config", "--config", str(tmp_path / "config.yaml"), "--preset",
                    "small", "--experiment", "fisa", "--out", str(out)], check=True, cwd=REPO)
    run = load_run_config(out)
    assert run["train"]["log_every"] == 7 and run["train"]["micro_batch_size"] == 2
    cfg = loop_config(run, world_size=1)
    assert cfg.log_every == 7 and cfg.micro_batch == 2 and cfg.global_batch == run["train"]["batch_size"] == 4
    # the paper preset is untouched, and the default is what the loop used before
    paper = load_config(tmp_path / "config.yaml")
    assert loop_config(run_config(paper, "fisa", "paper")).log_every == 20


def test_yaml_float_without_dot_gets_a_hint(config):
    bad = copy.deepcopy(config)
    bad["presets"]["small"]["defaults"]["train"]["lr"] = "1e-3"       # what YAML makes of `lr: 1e-3`
    with pytest.raises(ConfigError, match=r"train\.lr: '1e-3' is not of type 'number' \(YAML reads 1e-3 as a "
                                          r"string: write 1\.0e-3\)"):
        validate_config(bad)


# ---- the variant table (issue 15: variants as data) ---------------------------------------------
def test_variant_enum_comes_from_the_table(config):
    from fisa.models.variants import TABLE, variant_names

    schema_text = (REPO / "workflow/schemas/config.schema.yaml").read_text()
    assert "oracle_classifier" not in schema_text
    assert list(yaml.safe_load(TABLE.read_text())) == variant_names()
    bad = copy.deepcopy(config)
    bad["experiments"]["fisa"]["variant"] = "fisa_plus"
    with pytest.raises(ConfigError, match=r"experiments\.fisa\.variant: 'fisa_plus' is not one of \['baseline'"):
        validate_config(bad)


def test_no_variant_name_list_outside_the_table():
    """No file of fisa/ or workflow/ (but the table) names two variants as string literals."""
    from fisa.models.variants import TABLE, variant_names

    from fisa.models.variants import PARAMETER_GROUPS

    names = [n for n in variant_names() if n not in PARAMETER_GROUPS]   # `seve`, `lora` also name groups
    offenders = {}
    for path in [*(REPO / "fisa").rglob("*.py"), *(REPO / "workflow").rglob("*"), *(REPO / "fisa").rglob("*.yaml")]:
        if not path.is_file() or path == TABLE or path.suffix not in (".py", ".smk", ".yaml", ""):
            continue
        if path.parent.name == "bench":   # benchmarks name the two variants they time (fisa vs baseline)
            continue
        text = path.read_text(errors="replace")
        quoted = {n for n in names if re.search(rf"""["']{re.escape(n)}["']""", text)}
        if len(quoted) >= 2:
            offenders[str(path.relative_to(REPO))] = sorted(quoted)
    assert not offenders, offenders


def test_parameter_groups_agree_with_the_model_library():
    from fisa.models.parameters import GROUPS
    from fisa.models.variants import PARAMETER_GROUPS, variant_table

    assert tuple(PARAMETER_GROUPS) == tuple(GROUPS)
    for v in variant_table().values():
        assert set(v.trains) <= set(GROUPS)
        assert v.oracle == (not v.trained and v.name.startswith("oracle"))
