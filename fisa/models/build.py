"""The one factory: `build_model(model_cfg, variant, cache_dir)`."""
from __future__ import annotations

import contextlib

import torch

from fisa.models.clip_backbone import create_clip
from fisa.models.fisa_model import FisaModel
from fisa.models.generator import load_generator
from fisa.models.text import get_tokenizer
from fisa.models.variants import check_variant

# Every key of the `model` section the factory reads (config.yaml's presets.<P>.defaults.model, plus
# `clip` and `generator_config` resolved from the preset's tables). No key has a default in code.
MODEL_KEYS = ("backbone", "generator", "num_proposals", "adapter_layers", "adapter_channels", "adapter_kernel_size",
              "lora_rank", "seve", "patch_mask",
              "init_seed", "logit_scale", "prompt_templates", "synonyms", "void", "weights", "clip",
              "generator_config")
WEIGHTS = ("pretrained", "random")


def preset_model_config(preset: str = "paper", **overrides) -> dict:
    """A complete `model` section, as a run config holds it, for code that builds a model outside the
    workflow (tests, benchmarks, `fisa.models.summary`): config.yaml's `presets.<preset>.defaults.model`,
    `clip` and `generator_config` resolved from the preset's backbone / generator tables (as
    `fisa.config.resolve_experiment` does), then `overrides` (top-level keys replace whole values)."""
    import copy

    from fisa.config import load_config

    presets = load_config()["presets"]
    if preset not in presets:
        raise ValueError(f"preset: unknown {preset!r}; config.yaml has {sorted(presets)}")
    p = presets[preset]
    unknown = sorted(set(overrides) - set(MODEL_KEYS))
    if unknown:
        raise KeyError(f"model config: unknown keys {unknown} (known: {list(MODEL_KEYS)})")
    cfg = copy.deepcopy(p["defaults"]["model"])
    cfg["clip"] = copy.deepcopy(p["backbones"][cfg["backbone"]])
    cfg["generator_config"] = copy.deepcopy(p["generators"][cfg["generator"]])
    cfg.update(copy.deepcopy(overrides))
    return cfg


def build_model(model_cfg: dict, variant: str, cache_dir: str | None = None,
                device: str | torch.device | None = None) -> FisaModel:
    """Build the FISA model of `variant` from the resolved `model` config section.

    model_cfg: the complete `model` section, every key of MODEL_KEYS (a run config's, or
    `preset_model_config(...)`): backbone, generator, num_proposals, adapter_layers, lora_rank,
    seve {layers, shared, qk_dim, residual}, patch_mask {rule, threshold}, init_seed (the seed of random
    "pre-trained" weights when pretrained is null), logit_scale (null: CLIP's own), prompt_templates,
    synonyms, void, weights (`pretrained`: the backbone's `pretrained` tag / the generator's
    checkpoint; `random`: the same architectures, random weights, nothing read from cache_dir or the
    network (fisa.bench.rehearse)), clip {model, pretrained, image_size, source?},
    generator_config {source, id?, config?, ...}. A missing key is a KeyError naming it.
    cache_dir: where pretrained CLIP / hub generators are downloaded (`fetch`) and harness/converted
    generators live (<cache_dir>/generators/<generator>/).
    device: build directly on it (e.g. "meta": shapes only, no memory; the rehearsal); None: CPU.
    The frozen parts come from `init_seed`, independent of the global RNG; the new parts (SEVE,
    adapter) are drawn from the global RNG, i.e. the training seed.
    """
    check_variant(variant)
    missing = [k for k in MODEL_KEYS if k not in model_cfg]
    if missing:
        raise KeyError(f"model config: missing keys {missing} (pass the `model` section of "
                       "fisa.config.resolve_experiment, or fisa.models.build.preset_model_config(...))")
    init_seed = int(model_cfg["init_seed"])
    weights = model_cfg["weights"]
    if weights not in WEIGHTS:
        raise ValueError(f"model.weights: expected one of {WEIGHTS}, got {weights!r}")
    with torch.device(device) if device is not None else contextlib.nullcontext():
        clip = create_clip(model_cfg["clip"], cache_dir=cache_dir, init_seed=init_seed,
                           backbone=model_cfg["backbone"], weights=weights, device=device)
        tokenizer = get_tokenizer(model_cfg["clip"]["model"])
        generator = load_generator(model_cfg["generator"], model_cfg["generator_config"], cache_dir=cache_dir,
                                   init_seed=init_seed + 1, weights=weights)
        model = FisaModel(clip, tokenizer, generator, model_cfg, variant)
    # legacy constructors (torch.Tensor(n), e.g. Mask2Former's level_embed) ignore the device context
    return model.to(device) if device is not None else model
