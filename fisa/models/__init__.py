"""FISA model library: every model of the paper is one call of `build_model(model_cfg, variant)`.

A notebook needs nothing else:

    from fisa.models import build_model
    model = build_model(resolved["model"], "fisa")          # resolved = fisa.config.resolve_experiment(...)
    out = model.classify_proposals(images, [["cat"], ["dog", "puppy"]])   # images float [B,3,H,W] 0..255
    out["labels"], out["region_embeddings"]
"""
from __future__ import annotations

from fisa.models.build import build_model, preset_model_config
from fisa.models.fisa_model import FisaModel
from fisa.models.variants import VARIANTS

__all__ = ["build_model", "preset_model_config", "FisaModel", "VARIANTS"]
