"""Mask tokens on a CLIP vision tower (MaskCLIP-style mask attention, Eq. 1 and 5).

One mask token per proposal, initialised like [CLS] (class embedding + its position embedding,
then ln_pre). In every block the image tokens ([CLS] + patches) run CLIP's own self-attention,
untouched; each mask token attends to [CLS] and to the patch tokens whose patch holds any pixel
of its mask (boolean mask for `scaled_dot_product_attention`, i.e. additive 0 / -inf). Image tokens
never see mask tokens, so CLIP's own path is unchanged, and [CLS] is always visible, so an empty
mask cannot produce NaN. In SEVE blocks the normalised mask tokens are first enriched by
`SemanticGuidedAttention` before CLIP's f_q (Eq. 2).
"""
from __future__ import annotations

import torch
import torch.utils.checkpoint
import torch.nn.functional as F
from torch import nn

from fisa.models.clip_backbone import resize_position_embedding
from fisa.models.eva_backbone import VisionTower, vision_tower


PATCH_MASK_RULES = ("maskclip", "adaptive_max")


def patch_attention_mask(mask_logits: torch.Tensor, grid: tuple[int, int], patch_size: tuple[int, int],
                         patch_mask: dict) -> torch.Tensor:
    """Eq. 5: which patches a mask token may attend to, by the rule `model.patch_mask`.

    mask_logits [B, Q, h, w] (any resolution, covering the same frame as the CLIP input of
    grid * patch_size pixels) -> bool [B, Q, 1 + gh*gw]: True for [CLS] and for every patch that
    holds a mask pixel, a pixel whose sigmoid is >= `patch_mask["threshold"]`.
    - rule "maskclip" (MaskCLIP, docs/models.md): the logits are upsampled bilinearly
      (align_corners=False) to the CLIP input size, thresholded, and max-pooled over each
      patch_size block. Pooling first and thresholding the maximum is the same set exactly
      (sigmoid is monotone); masks are processed in chunks to bound memory.
    - rule "adaptive_max" (the harness's earlier rule, kept for the sensitivity study): adaptive
      max pooling of the logits at their own resolution to the grid, then the threshold. When
      h/gh is not an integer the pooling bins overlap, and masks dilate by up to one patch.
    """
    rule, threshold = patch_mask["rule"], float(patch_mask["threshold"])
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"model.patch_mask.threshold: expected a probability in (0, 1), got {threshold}")
    b, q = mask_logits.shape[:2]
    gh, gw = grid
    logits = mask_logits.detach().float()  # a boolean bias: no gradient flows through it
    if rule == "maskclip":
        ph, pw = patch_size
        size = (gh * ph, gw * pw)
        chunk = max(1, (1 << 26) // max(1, b * size[0] * size[1]))  # <= ~256 MB of float32 per chunk
        pooled = []
        for start in range(0, q, chunk):
            part = logits[:, start:start + chunk]
            if tuple(part.shape[-2:]) != size:
                part = F.interpolate(part, size=size, mode="bilinear", align_corners=False)
            pooled.append(F.max_pool2d(part, kernel_size=(ph, pw), stride=(ph, pw)))
        peak = torch.cat(pooled, dim=1) if pooled else logits.new_zeros(b, 0, gh, gw)
    elif rule == "adaptive_max":
        peak = F.adaptive_max_pool2d(logits, grid)
    else:
        raise ValueError(f"model.patch_mask.rule: expected one of {list(PATCH_MASK_RULES)}, got {rule!r}")
    inside = peak.sigmoid() >= threshold  # [B, Q, gh, gw]
    cls = torch.ones(b, q, 1, dtype=torch.bool, device=mask_logits.device)
    return torch.cat([cls, inside.flatten(2)], dim=2)


def image_tokens(visual: nn.Module | VisionTower, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Patch-embed normalised pixels [B, 3, H, W] -> ([CLS] + patch tokens after the pre-norm [B, 1+N, W], grid)."""
    tower = visual if isinstance(visual, VisionTower) else vision_tower(visual)
    x = tower.patch_embed(pixels)  # [B, W, gh, gw]
    grid = (x.shape[2], x.shape[3])
    x = x.flatten(2).transpose(1, 2)  # [B, N, W]
    cls = tower.class_token.to(x.dtype).expand(x.shape[0], 1, -1)
    pos = resize_position_embedding(tower.position_embedding, tower.grid_size, grid)
    x = torch.cat([cls, x], dim=1) + pos.to(x.dtype)
    return tower.pre_norm(x), grid


def initial_mask_tokens(visual: nn.Module | VisionTower, batch: int, num_masks: int, dtype: torch.dtype) -> torch.Tensor:
    """Mask tokens initialised as [CLS] with its position embedding, after the pre-norm -> [B, Q, W]."""
    tower = visual if isinstance(visual, VisionTower) else vision_tower(visual)
    token = tower.pre_norm((tower.class_token + tower.position_embedding[0]).to(dtype))
    return token.expand(batch, num_masks, -1)


def mask_token_block(block: nn.Module, x: torch.Tensor, mask_tokens: torch.Tensor, keep: torch.Tensor,
                     seve: nn.Module | None = None, class_tokens: torch.Tensor | None = None,
                     parts: tuple | None = None, seve_keys_values: tuple | None = None):
    """One transformer block over image tokens and mask tokens.

    x [B, 1+N, W] image tokens, mask_tokens [B, Q, W], keep bool [B, Q, 1+N] (Eq. 5),
    seve/class_tokens: optional SEVE module and [C, D] target class tokens (or seve_keys_values,
    their precomputed `class_keys_values`); parts: the block's (norm1, attn, scale1, norm2, mlp,
    scale2), default open_clip's ResidualAttentionBlock layout.
    Returns (x [B, 1+N, W], mask_tokens [B, Q, W]).
    """
    norm1, attn, scale1, norm2, mlp, scale2 = parts or (block.ln_1, block.attn, block.ls_1, block.ln_2,
                                                         block.mlp, block.ls_2)
    h = norm1(x)
    k, v = attn.heads(attn.k_proj(h)), attn.heads(attn.v_proj(h))  # [B, H, 1+N, d]
    # CLIP's own self-attention for the image tokens.
    img = F.scaled_dot_product_attention(attn.heads(attn.q_proj(h)), k, v)
    x = x + scale1(attn.merge(img))
    x = x + scale2(mlp(norm2(x)))
    # Mask tokens: (SEVE) -> f_q -> masked attention to the same keys/values (Eq. 1-2).
    hm = norm1(mask_tokens)
    if seve is not None:
        hm = seve(hm, class_tokens, keys_values=seve_keys_values)
    qm = attn.heads(attn.q_proj(hm))  # [B, H, Q, d]
    out = F.scaled_dot_product_attention(qm, k, v, attn_mask=keep.unsqueeze(1))
    mask_tokens = mask_tokens + scale1(attn.merge(out))
    mask_tokens = mask_tokens + scale2(mlp(norm2(mask_tokens)))
    return x, mask_tokens


def encode_with_mask_tokens(visual: nn.Module, pixels: torch.Tensor, mask_logits: torch.Tensor,
                            patch_mask: dict, seve: dict[int, nn.Module] | None = None,
                            class_tokens: torch.Tensor | None = None,
                            checkpoint_blocks: bool = False) -> dict[str, torch.Tensor]:
    """Run the vision tower (open_clip ViT or EVA) with one mask token per proposal.

    pixels [B, 3, H, W] CLIP-normalised; mask_logits [B, Q, h, w] in the same frame;
    patch_mask: `model.patch_mask` {rule, threshold} (Eq. 5, see patch_attention_mask);
    seve: {block index: SemanticGuidedAttention} (one module may serve several blocks: its class
    keys/values are then computed once); class_tokens [C, D].
    checkpoint_blocks (`train.gradient_checkpointing`): with gradients on, each block's activations
    are recomputed in the backward pass instead of kept (torch.utils.checkpoint, non-reentrant):
    the same values and gradients for about one block's activations of memory instead of all of them.
    Returns {"region_embeddings" [B, Q, D] (the tower's head on the final mask tokens),
    "cls_embedding" [B, D], "image_tokens" [B, 1+N, W] (before the final norm), "grid"}.
    """
    seve = seve or {}
    tower = vision_tower(visual)
    x, grid = image_tokens(tower, pixels)
    keep = patch_attention_mask(mask_logits, grid, tower.patch_size, patch_mask)
    m = initial_mask_tokens(tower, x.shape[0], mask_logits.shape[1], x.dtype)
    keys_values = {id(mod): mod.class_keys_values(class_tokens, x.shape[0], x.dtype)
                   for mod in {id(mod): mod for mod in seve.values()}.values()}
    checkpoint_blocks = checkpoint_blocks and torch.is_grad_enabled()
    for i, block in enumerate(tower.blocks):
        mod = seve.get(i)
        args = (block, x, m, keep, mod, class_tokens, tower.block_parts(block),
                keys_values[id(mod)] if mod is not None else None)
        if checkpoint_blocks:
            x, m = torch.utils.checkpoint.checkpoint(mask_token_block, *args, use_reentrant=False)
        else:
            x, m = mask_token_block(*args)
    return {"region_embeddings": tower.head(m), "cls_embedding": tower.head(x[:, 0]), "image_tokens": x,
            "grid": grid}
