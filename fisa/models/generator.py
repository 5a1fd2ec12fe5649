"""The frozen mask generator: Mask2Former from HuggingFace transformers, used only for its masks.

Sources (`model.generator_config.source`):
- `hub`: `Mask2FormerForUniversalSegmentation.from_pretrained(id, cache_dir=<cache_dir>/huggingface)`.
- `harness` / `converted`: `from_pretrained(<cache_dir>/generators/<generator logical name>/)`, a
  folder written with `save_pretrained` by the engine's `train_generator` (harness) or by
  `python -m fisa.models.convert_d2_mask2former` (converted). With `cache_dir=None` a harness
  generator that names a tiny `config` is built with random weights from `init_seed` instead
  (tests, notebooks).

Only `masks_queries_logits` are read: the library's panoptic post-processing resizes to 384x384
and multiplies mask probabilities by class scores, which is not what FISA wants.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fisa.models.clip_backbone import MODEL_CONFIG_DIR

# ImageNet statistics in 0..255 (Mask2Former's image processor: rescale 1/255, then these / 255).
GENERATOR_MEAN = (123.675, 116.28, 103.53)
GENERATOR_STD = (58.395, 57.12, 57.375)
SIZE_DIVISIBILITY = 32  # Swin / ResNet feature strides; the HF image processor pads to it as well
MAKING_RULE = {"harness": "train_generator", "converted": "convert_generator"}


def generator_dir(cache_dir: str | Path, name: str) -> Path:
    """Where a harness-trained or converted generator `name` lives: <cache_dir>/generators/<name>/."""
    return Path(cache_dir) / "generators" / name


def tiny_generator_config(name: str):
    """The `Mask2FormerConfig` of a tiny JSON config in `fisa/models/model_configs/` (e.g. fisa-tiny-m2f-swin)."""
    from transformers import Mask2FormerConfig

    path = MODEL_CONFIG_DIR / f"{name}.json"
    if not path.exists():
        known = sorted(p.stem for p in MODEL_CONFIG_DIR.glob("fisa-tiny-m2f-*.json"))
        raise ValueError(f"model.generator_config.config: no Mask2Former config {name!r} ({path} missing; known: {known})")
    return Mask2FormerConfig.from_dict(json.loads(path.read_text()))


def hub_architecture_path(hub_id: str) -> Path:
    """The published architecture of a hub Mask2Former, stored so random-weight builds stay offline:
    fisa/models/model_configs/hub-<owner>--<name>.json (sizes only; see docs/models.md for sources)."""
    return MODEL_CONFIG_DIR / f"hub-{hub_id.replace('/', '--')}.json"


def generator_architecture(generator_config: dict, cache_dir: str | None = None):
    """The `Mask2FormerConfig` of a generator entry without its weights: the tiny JSON `config`; a hub
    `id`'s stored architecture (else its config.json, downloaded to / read from `cache_dir`); a
    `converted` entry's detectron2 R50 architecture. A `base: NAME` entry must be resolved by the
    caller to the base generator's entry first."""
    from transformers import Mask2FormerConfig

    if generator_config.get("config"):
        return tiny_generator_config(generator_config["config"])
    if generator_config.get("source") == "converted":
        from fisa.models.convert_d2_mask2former import r50_config

        return r50_config()
    if generator_config.get("id") and generator_config.get("source") == "hub":
        stored = hub_architecture_path(generator_config["id"])
        if stored.exists():
            return Mask2FormerConfig.from_dict(json.loads(stored.read_text()))
        hf_cache = str(Path(cache_dir) / "huggingface") if cache_dir else None
        return Mask2FormerConfig.from_pretrained(generator_config["id"], cache_dir=hf_cache)
    raise ValueError(f"model.generator_config={generator_config!r}: no `config` (tiny JSON), hub `id` or "
                     "`converted` source to take the architecture from; for a `base: NAME` entry pass the "
                     "base generator's config")


def build_generator_architecture(generator_config: dict, cache_dir: str | None = None, init_seed: int = 0):
    """A randomly initialised `Mask2FormerForUniversalSegmentation` of `generator_architecture`,
    drawn from `init_seed` (the global RNG is left untouched). Used by the engine's generator
    training (Fig. 2b, the small preset's "pre-trained" generators) and by `weights: random`.
    """
    from transformers import Mask2FormerForUniversalSegmentation

    cfg = generator_architecture(generator_config, cache_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return Mask2FormerForUniversalSegmentation(cfg)


def load_generator(generator_name: str, generator_config: dict, cache_dir: str | None = None, init_seed: int = 0,
                   weights: str = "pretrained"):
    """Load the Mask2Former named by `generator_name` / `generator_config` (see module docstring);
    `weights="random"`: its architecture with random weights from `init_seed`, nothing loaded."""
    from transformers import Mask2FormerForUniversalSegmentation

    source = generator_config.get("source")
    if weights == "random":
        return build_generator_architecture(generator_config, cache_dir, init_seed=init_seed)
    if source == "hub":
        if not generator_config.get("id"):
            raise ValueError(f"model.generator_config: source 'hub' needs an `id`, got {generator_config!r}")
        hf_cache = str(Path(cache_dir) / "huggingface") if cache_dir else None
        return Mask2FormerForUniversalSegmentation.from_pretrained(generator_config["id"], cache_dir=hf_cache)
    if source in ("harness", "converted"):
        if cache_dir is None:
            if source == "harness" and generator_config.get("config"):
                return build_generator_architecture(generator_config, init_seed=init_seed)
            raise ValueError(f"generator {generator_name!r} (source {source!r}) needs a cache_dir holding "
                             f"generators/{generator_name}/")
        path = generator_dir(cache_dir, generator_name)
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"generator {generator_name!r}: {path}/config.json not found; it is written by the Snakemake rule "
                f"`{MAKING_RULE[source]}` (python -m "
                f"{'fisa.engine.train_generator' if source == 'harness' else 'fisa.models.convert_d2_mask2former'})")
        return Mask2FormerForUniversalSegmentation.from_pretrained(str(path))
    raise ValueError(f"model.generator_config.source: expected hub, harness or converted, got {source!r}")


def normalize_for_generator(images: torch.Tensor) -> torch.Tensor:
    """images float [B, 3, H, W] in 0..255 -> ImageNet-normalised, zero-padded to a multiple of 32."""
    mean = images.new_tensor(GENERATOR_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(GENERATOR_STD).view(1, 3, 1, 1)
    x = (images - mean) / std
    h, w = x.shape[-2:]
    ph, pw = (-h) % SIZE_DIVISIBILITY, (-w) % SIZE_DIVISIBILITY
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x


def generator_proposals(generator: nn.Module, images: torch.Tensor, num_proposals: int) -> torch.Tensor:
    """Mask proposals of `generator` for images [B, 3, H, W] (0..255) -> mask logits [B, Q, ceil(H/4), ceil(W/4)].

    Padding is cropped away. If the generator has more queries than `num_proposals`, the
    `num_proposals` with the highest objectness (1 - its own no-object probability) are kept.
    """
    h, w = images.shape[-2:]
    out = generator(pixel_values=normalize_for_generator(images))
    masks = out.masks_queries_logits  # [B, Qg, Hp/4, Wp/4]
    masks = masks[..., : -(-h // 4), : -(-w // 4)]
    q = masks.shape[1]
    if num_proposals > q:
        raise ValueError(f"model.num_proposals={num_proposals} exceeds the generator's {q} queries")
    if num_proposals < q:
        objectness = 1 - out.class_queries_logits.softmax(-1)[..., -1]  # [B, Qg]
        idx = objectness.topk(num_proposals, dim=1).indices.sort(dim=1).values
        masks = masks.gather(1, idx[:, :, None, None].expand(-1, -1, *masks.shape[-2:]))
    return masks
