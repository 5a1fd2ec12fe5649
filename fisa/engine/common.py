"""Shared by the entry points: logging, config loading from the CLI, model (re)building,
run-folder files, batch conversion."""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

import torch
import yaml

from fisa.config import config_hash, load_config, resolve_experiment

log = logging.getLogger("fisa.engine")

MODEL_FINAL = "model_final.pt"


def setup_logging(rank: int = 0) -> None:
    """Plain log lines with a timestamp (readable in SLURM logs); other ranks only warn."""
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)


def add_common_args(ap: argparse.ArgumentParser, experiment: bool = True) -> None:
    """--config / --preset / --set (and --experiment / --seed) used by every entry point."""
    ap.add_argument("--config", default=None, help="config.yaml (default: the repository's)")
    ap.add_argument("--preset", default=None, help="preset name (default: the config's `preset`)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                    help="override a config value, e.g. --set presets.small.defaults.train.lr=1e-3")
    if experiment:
        ap.add_argument("--experiment", required=True)
        ap.add_argument("--seed", type=int, default=0)


def overrides_from(pairs: list[str]) -> dict:
    """`a.b.c=value` strings (value parsed as YAML) -> nested dict."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE")
        key, value = pair.split("=", 1)
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


def resolved_from_args(args) -> dict:
    """Load the config and resolve `args.experiment` under `args.preset` with `args.seed`."""
    config = load_config(args.config, overrides_from(args.set))
    return resolve_experiment(config, args.experiment, preset=args.preset, seed=args.seed)


def pick_device(resolved: dict) -> torch.device:
    """The preset's device; CUDA requested but absent is an error, not a silent CPU run."""
    want = resolved.get("device", "cpu")
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"preset {resolved['preset']!r} asks for device {want!r} but CUDA is not "
                           "available here (use --preset small, or run on a GPU node)")
    return torch.device(want)


def build_run_model(resolved: dict, device: torch.device | str = "cpu"):
    """The FisaModel of a run, freshly initialised: frozen parts from their (pre-)trained
    weights, new parts drawn from the run's seed. Training and evaluation both call this,
    so frozen parts never need to be stored in the run folder."""
    from fisa.models import build_model

    torch.manual_seed(resolved["seed"])
    model = build_model(resolved["model"], resolved["variant"], cache_dir=resolved["cache_dir"])
    return model.to(device)


def load_run_model(resolved: dict, run_dir: str | Path | None, device: torch.device | str = "cpu"):
    """The model of a finished run: `build_run_model` + the run's `model_final.pt`.

    Returns (model, checkpoint path or None). Variants with 0 iterations (baseline,
    oracles) need no run folder.
    """
    from fisa.engine.loop import load_trainable_state_dict

    model = build_run_model(resolved, device)
    if run_dir is None:
        if resolved["train"]["iterations"] > 0:
            raise FileNotFoundError(f"experiment {resolved['experiment']!r} is trained "
                                    f"({resolved['train']['iterations']} iterations): pass --run-dir")
        return model, None
    path = Path(run_dir) / MODEL_FINAL
    if (Path(run_dir) / "done.json").exists():  # done.json vouches for model_final.pt: check before use
        from fisa.utils.markers import check_run_done

        check_run_done(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no final model; has `python -m fisa.engine.train` finished "
                                f"for {resolved['experiment']!r} (its done.json)?")
    state = torch.load(path, map_location=device, weights_only=True)  # written by train: tensors and plain values
    if state.get("config_hash") not in (None, config_hash(resolved, ("variant", "model", "train"))):
        raise ValueError(f"{path}: trained with a different model/train config (hash "
                         f"{state.get('config_hash')}) than experiment {resolved['experiment']!r} now "
                         "resolves to; retrain or check config.yaml")
    load_trainable_state_dict(model, state["model"], source=str(path))
    return model, path


def write_resolved_config(path: str | Path, resolved: dict) -> None:
    """The fully resolved run config as YAML (atomic)."""
    from fisa.utils.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(resolved, sort_keys=False))


def split_batch(batch: Any) -> tuple[torch.Tensor, list[dict]]:
    """(images float [B,3,H,W] in 0..255, targets [{labels, masks}]) from a collated batch.

    Accepts the data library's collate output ({"images", "targets"}) or a plain list of
    dataset items (detectron2 style).
    """
    if isinstance(batch, dict) and "images" in batch:
        images = batch["images"]
        targets = batch.get("targets")
        if targets is None:
            targets = [{"labels": l, "masks": m} for l, m in zip(batch["labels"], batch["masks"])]
    else:
        images = torch.stack([item["image"] for item in batch])
        targets = [{"labels": item["labels"], "masks": item["masks"]} for item in batch]
    return images.float(), targets


def env_int(name: str, default: int) -> int:
    """An integer environment variable, or `default`."""
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default
