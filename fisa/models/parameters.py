"""Trainable parameters by group, AdamW parameter groups, and small trainable-only checkpoints.

SIMO's q-only training needs nothing at optimizer time: the query projections are separate
tensors (`SplitAttention`), k/v are frozen tensors that never enter an optimizer group, so
neither gradients nor AdamW's decoupled weight decay can move them (tests prove it bit for bit).
"""
from __future__ import annotations

import torch
from torch import nn

from fisa.models.variants import is_query_projection, is_text_tower

GROUPS = ("query_projection", "seve", "distribution_adapter", "no_object", "lora",
          "clip_visual", "text_encoder", "mask_generator")
# New parameters train at the base lr; pre-trained ones at lr x backbone_lr_multiplier.
NEW_GROUPS = ("seve", "distribution_adapter", "no_object", "lora")


def parameter_group(name: str) -> str:
    """The group of a FisaModel parameter name (one of GROUPS)."""
    if "lora_" in name:
        return "lora"
    if is_query_projection(name):
        return "query_projection"
    if name.startswith("seve."):
        return "seve"
    if name.startswith("distribution_adapter."):
        return "distribution_adapter"
    if name == "no_object_embedding":
        return "no_object"
    if name.startswith("clip.visual."):
        return "clip_visual"
    if name.startswith("generator."):
        return "mask_generator"
    if is_text_tower(name) or name.startswith("clip."):
        return "text_encoder"
    raise ValueError(f"parameter {name!r} belongs to no known group")


def named_trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) for every parameter with requires_grad."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def trainable_parameters(model: nn.Module) -> int:
    """Number of trainable scalars (paper line 138: "26M"; `fisa` on ViT-L-14-336 with the paper
    preset's SEVE trains 26,323,225, arithmetic in docs/models.md)."""
    return sum(p.numel() for _, p in named_trainable_parameters(model))


def total_parameters(model: nn.Module) -> int:
    """Number of scalars in all parameters."""
    return sum(p.numel() for p in model.parameters())


def trainable_by_group(model: nn.Module) -> dict[str, int]:
    """Trainable scalars per group; every group of GROUPS is present (0 when nothing trains there)."""
    out = dict.fromkeys(GROUPS, 0)
    for n, p in named_trainable_parameters(model):
        out[parameter_group(n)] += p.numel()
    return out


def param_groups(model: nn.Module, lr: float, weight_decay: float, backbone_lr_multiplier: float) -> list[dict]:
    """AdamW parameter groups over the trainable parameters only.

    lr: SEVE, adapter, no-object embedding and LoRA factors (new); lr x backbone_lr_multiplier:
    query projections, CLIP visual, text tower, generator (pre-trained). Weight decay is 0 for
    tensors with < 2 dims (biases, norms, embeddings vectors), `weight_decay` otherwise.
    Each group carries a "name" ("<group>/<decay|no_decay>") for logging.
    """
    buckets: dict[str, dict] = {}
    for n, p in named_trainable_parameters(model):
        group = parameter_group(n)
        decay = p.ndim >= 2
        key = f"{group}/{'decay' if decay else 'no_decay'}"
        if key not in buckets:
            buckets[key] = {"name": key, "params": [],
                            "lr": lr if group in NEW_GROUPS else lr * backbone_lr_multiplier,
                            "weight_decay": weight_decay if decay else 0.0}
        buckets[key]["params"].append(p)
    return list(buckets.values())


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters only (a ViT-L-14-336 FISA checkpoint is 26.3M values, not all of CLIP)."""
    return {n: p.detach().clone() for n, p in named_trainable_parameters(model)}


def load_trainable_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load `trainable_state_dict` output into a model built with the same config and variant."""
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - set(params))
    if missing or unexpected:
        raise KeyError(f"{source}: trainable parameters do not match the model "
                       f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                       f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})")
    with torch.no_grad():
        for n, t in state.items():
            if params[n].shape != t.shape:
                raise ValueError(f"{source}: {n} has shape {tuple(t.shape)}, model expects {tuple(params[n].shape)}")
            params[n].copy_(t)
