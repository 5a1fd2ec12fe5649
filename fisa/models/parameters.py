"""Trainable parameters by group, AdamW parameter groups, and small trainable-only checkpoints.

SIMO's q-only training needs nothing at optimizer time: the query projections are separate
tensors (`SplitAttention`), k/v are frozen tensors that never enter an optimizer group, so
neither gradients nor AdamW's decoupled weight decay can move them (tests prove it bit for bit).
"""
from __future__ import annotations

from torch import nn

from fisa.models.variants import is_query_projection, is_text_tower

GROUPS = ("query_projection", "seve", "distribution_adapter", "no_object", "lora",
          "clip_visual", "text_encoder", "mask_generator")


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


# Module types whose parameters count as "norm" for weight decay (detectron2's list in
# Mask2Former's and MaskCLIP's train_net.py build_optimizer; subclasses such as open_clip's
# LayerNorm included).
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm,
              nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.LocalResponseNorm)
PRETRAINED_GROUPS = ("query_projection", "clip_visual", "text_encoder", "mask_generator")


def decay_kind(module: nn.Module, param_name: str) -> str:
    """How weight decay treats a parameter: "norm" (of a normalisation layer), "embedding"
    (an nn.Embedding table), "bias" (any other parameter named bias), else "weight"."""
    if isinstance(module, NORM_TYPES):
        return "norm"
    if isinstance(module, nn.Embedding):
        return "embedding"
    return "bias" if param_name == "bias" else "weight"


def param_groups(model: nn.Module, lr: float, weight_decay: float, backbone_lr_multiplier: float, *,
                 multiplier_groups: tuple[str, ...] | list[str] = PRETRAINED_GROUPS,
                 weight_decay_bias: float | None = None, weight_decay_norm: float = 0.0,
                 weight_decay_embedding: float = 0.0) -> list[dict]:
    """AdamW parameter groups over the trainable parameters only.

    lr x backbone_lr_multiplier for parameters in `multiplier_groups` (groups of GROUPS;
    train.backbone_lr_multiplier_applies_to), lr for the others. Weight decay by kind
    (`decay_kind`): `weight_decay` for weights, `weight_decay_bias` for biases (None: same
    as weights, detectron2's WEIGHT_DECAY_BIAS), `weight_decay_norm` for normalisation layers
    and `weight_decay_embedding` for nn.Embedding tables (detectron2/Mask2Former: 0 and 0).
    Each group carries a "name" ("<group>/<kind>") for logging.
    """
    unknown = sorted(set(multiplier_groups) - set(GROUPS))
    if unknown:
        raise ValueError(f"train.backbone_lr_multiplier_applies_to: unknown groups {unknown} (known: {list(GROUPS)})")
    decay = {"weight": weight_decay, "bias": weight_decay if weight_decay_bias is None else weight_decay_bias,
             "norm": weight_decay_norm, "embedding": weight_decay_embedding}
    buckets: dict[str, dict] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:  # a shared tensor joins one group only
                continue
            seen.add(id(p))
            group = parameter_group(f"{module_name}.{pname}" if module_name else pname)
            kind = decay_kind(module, pname)
            key = f"{group}/{kind}"
            if key not in buckets:
                buckets[key] = {"name": key, "params": [],
                                "lr": lr * backbone_lr_multiplier if group in multiplier_groups else lr,
                                "weight_decay": decay[kind]}
            buckets[key]["params"].append(p)
    return list(buckets.values())
