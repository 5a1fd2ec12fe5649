"""The one factory: `build_model(model_cfg, variant, cache_dir)`."""
from __future__ import annotations

import contextlib

import torch

from fisa.models.clip_backbone import create_clip
from fisa.models.fisa_model import FisaModel
from fisa.models.generator import load_generator
from fisa.models.text import get_tokenizer
from fisa.models.variants import check_variant

REQUIRED_KEYS = ("clip", "generator", "generator_config")
WEIGHTS = ("pretrained", "random")


def build_model(model_cfg: dict, variant: str, cache_dir: str | None = None,
                device: str | torch.device | None = None) -> FisaModel:
    """Build the FISA model of `variant` from the resolved `model` config section.

    model_cfg: {backbone, generator, num_proposals, adapter_layers, lora_rank, seve {layers, residual},
    prompt_templates, clip {model, pretrained, image_size}, generator_config {source, id?, config?, ...},
    optional init_seed (default 0: the seed of random "pre-trained" weights when pretrained is null),
    optional logit_scale (default: CLIP's own), optional weights (default `pretrained`: the backbone's
    `pretrained` tag / the generator's checkpoint; `random`: the same architectures, random weights,
    nothing read from cache_dir or the network (fisa.bench.rehearse))}.
    cache_dir: where pretrained CLIP / hub generators are downloaded (`fetch`) and harness/converted
    generators live (<cache_dir>/generators/<generator>/).
    device: build directly on it (e.g. "meta": shapes only, no memory; the rehearsal); None: CPU.
    The frozen parts come from `init_seed`, independent of the global RNG; the new parts (SEVE,
    adapter) are drawn from the global RNG, i.e. the training seed.
    """
    check_variant(variant)
    missing = [k for k in REQUIRED_KEYS if k not in model_cfg]
    if missing:
        raise KeyError(f"model config: missing keys {missing} (pass the `model` section of "
                       "fisa.config.resolve_experiment)")
    init_seed = int(model_cfg.get("init_seed", 0))
    weights = model_cfg.get("weights", "pretrained")
    if weights not in WEIGHTS:
        raise ValueError(f"model.weights: expected one of {WEIGHTS}, got {weights!r}")
    with torch.device(device) if device is not None else contextlib.nullcontext():
        clip = create_clip(model_cfg["clip"], cache_dir=cache_dir, init_seed=init_seed,
                           backbone=model_cfg.get("backbone"), weights=weights, device=device)
        tokenizer = get_tokenizer(model_cfg["clip"]["model"])
        generator = load_generator(model_cfg["generator"], model_cfg["generator_config"], cache_dir=cache_dir,
                                   init_seed=init_seed + 1, weights=weights)
        model = FisaModel(clip, tokenizer, generator, model_cfg, variant)
    # legacy constructors (torch.Tensor(n), e.g. Mask2Former's level_embed) ignore the device context
    return model.to(device) if device is not None else model
