"""Which parameters each variant trains (SPEC Table 3, Fig. 2a). Architecture is shared; only
`requires_grad` (and, for `lora`, the injected LoRA layers) differ.

| variant              | SEVE + adapter | CLIP visual        | text tower | generator |
| baseline             | -              | frozen             | frozen     | frozen    |
| seve                 | trained        | frozen             | frozen     | frozen    |
| seve_full_finetune   | trained        | all trained        | frozen     | frozen    |
| fisa (SEVE + SIMO)   | trained        | q projections      | frozen     | frozen    |
| lora                 | trained        | LoRA on q,k,v,out  | frozen     | frozen    |
| adapt_text_encoder   | trained        | q projections      | trained    | frozen    |
| adapt_mask_generator | trained        | q projections      | frozen     | trained   |
| oracle_generator     | -              | frozen             | frozen     | (GT masks)|
| oracle_classifier    | -              | frozen             | frozen     | frozen    |
"""
from __future__ import annotations

from torch import nn

VARIANTS = ("baseline", "seve", "seve_full_finetune", "fisa", "lora", "adapt_text_encoder",
            "adapt_mask_generator", "oracle_generator", "oracle_classifier")
UNTRAINED_VARIANTS = ("baseline", "oracle_generator", "oracle_classifier")
SIMO_VARIANTS = ("fisa", "adapt_text_encoder", "adapt_mask_generator")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def check_variant(variant: str) -> str:
    """Return `variant` or raise a ValueError listing the known ones."""
    if variant not in VARIANTS:
        raise ValueError(f"variant: unknown {variant!r}; expected one of {list(VARIANTS)}")
    return variant


def uses_seve(variant: str) -> bool:
    """SEVE (and the Distribution Adapter) exist in every trained variant, not in the MaskCLIP baseline/oracles."""
    return variant not in UNTRAINED_VARIANTS


def inject_lora(visual: nn.Module, rank: int) -> None:
    """peft LoRA (alpha = rank, so scaling 1; no dropout) on every vision block's q/k/v/out projection.

    Works because `SplitAttention` exposes the projections as plain nn.Linear layers; peft's own
    nn.MultiheadAttention support does not cover open_clip's fused in_proj as cleanly.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"model.lora_rank: the lora variant needs a positive integer rank, got {rank!r}")
    cfg = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, bias="none",
                     target_modules=r".*(resblocks|blocks)\.\d+\.attn\.(q_proj|k_proj|v_proj|out_proj)")
    inject_adapter_in_model(cfg, visual)


def is_query_projection(name: str) -> bool:
    """A vision block's query projection (weight or bias), not a LoRA factor."""
    return name.startswith(("clip.visual.transformer.resblocks.", "clip.visual.trunk.blocks.")) \
        and ".attn.q_proj." in name and "lora_" not in name


def is_text_tower(name: str) -> bool:
    """CLIP's text side (everything of `clip` outside `clip.visual`, except the logit scale/bias)."""
    return name.startswith("clip.") and not name.startswith("clip.visual.") and name not in ("clip.logit_scale", "clip.logit_bias")


def apply_variant(model: nn.Module, variant: str) -> None:
    """Set `requires_grad` on `model` (a FisaModel) for `variant`."""
    check_variant(variant)
    for p in model.parameters():
        p.requires_grad_(False)
    if variant in UNTRAINED_VARIANTS:
        return
    for module in (model.seve, model.distribution_adapter):
        if module is not None:
            for p in module.parameters():
                p.requires_grad_(True)
    model.no_object_embedding.requires_grad_(True)
    for name, p in model.named_parameters():
        if variant == "seve_full_finetune" and name.startswith("clip.visual."):
            p.requires_grad_(True)
        elif variant in SIMO_VARIANTS and is_query_projection(name):
            p.requires_grad_(True)
        elif variant == "lora" and "lora_" in name:
            p.requires_grad_(True)
        elif variant == "adapt_text_encoder" and is_text_tower(name):
            p.requires_grad_(True)
        elif variant == "adapt_mask_generator" and name.startswith("generator."):
            p.requires_grad_(True)
