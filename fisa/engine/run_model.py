"""A run's model: the device, the FisaModel a run config builds, the weights of a finished run
(`model_final.pt`, checked against its `done.json`), and a training batch's tensors."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fisa.config import config_hash

MODEL_FINAL = "model_final.pt"
# The run config's name inside a run folder (the config its checkpoints were trained with).
RUN_CONFIG = "run_config.yaml"


def pick_device(resolved: dict) -> torch.device:
    """The preset's device; CUDA requested but absent is an error, not a silent CPU run."""
    want = resolved["device"]
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
    model.text_cache_dir = Path(resolved["cache_dir"]) / "text_embeddings"  # one encoding per vocabulary and text tower
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
                                    f"({resolved['train']['iterations']} iterations): pass its run folder")
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
