"""The inputs the real `fisa.engine.train` of the small preset needs, made as cheaply as
possible: synthetic data, a 2-iteration "pre-trained" generator and CLIP (the runs' quality
does not matter to the tests that use them: resume, DDP, precision, SLURM signals)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def prepare_tiny_inputs(root: Path) -> dict:
    from fisa.config import generator_run_config, load_config
    from fisa.data.synthetic import generate
    from fisa.engine.pretrain_clip import pretrain_clip
    from fisa.engine.train_generator import train_generator
    from fisa.models.clip_backbone import harness_clip_path

    data, cache = root / "datasets", root / "checkpoints"
    generate(str(data), seed=0, sizes={"coco_train": 16, "coco": 1, "ade150": 1, "ade847": 1, "pc59": 1,
                                       "mapillary": 1, "refcoco": 2})
    config = load_config(overrides={"presets": {"small": {
        "data_root": str(data), "cache_dir": str(cache),
        "generators": {"swin_b": {"train": {"iterations": 2}}}}}})
    train_generator(generator_run_config(config, "swin_b", "small"), cache / "generators" / "swin_b")
    backbone = dict(config["presets"]["small"]["backbones"]["vit_l14_336"])
    backbone["pretrain"] = {**backbone["pretrain"], "iterations": 2}
    pretrain_clip(backbone, harness_clip_path(cache, "vit_l14_336"))
    return {"root": root, "data": data, "cache": cache}


def train_overrides(inputs: dict, iterations: int, **train) -> dict:
    """load_config overrides: the inputs' folders, `iterations` for the ablation schedule, train keys."""
    return {"presets": {"small": {"data_root": str(inputs["data"]), "cache_dir": str(inputs["cache"]),
                                  "schedules": {"ablation": iterations}, "defaults": {"train": train}}}}


def train_command(inputs: dict, out: Path, iterations: int, *extra: str, **train) -> list[str]:
    """`python -m fisa.engine.train --run-config F` of experiment fisa (seed 0) with the same
    overrides; the run config (written beside `out`) names `out` as its run folder."""
    from fisa.config import load_config, run_config, write_run_config

    run = run_config(load_config(overrides=train_overrides(inputs, iterations, **train)), "fisa", "small", 0,
                     run_dir=str(out))
    path = Path(out).parent / f"{Path(out).name}.run_config.yaml"
    write_run_config(path, run)
    return [sys.executable, "-m", "fisa.engine.train", "--run-config", str(path), *extra]


def engine_env(**extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        if k not in extra:
            env.pop(k, None)
    return env
