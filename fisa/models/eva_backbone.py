"""EVA towers (open_clip `TimmModel` around timm's `Eva`, e.g. EVA01-g-14-plus) for mask tokens.

`vision_tower(visual)` gives one view over both tower kinds (open_clip's native VisionTransformer
and timm's Eva), so `mask_attention.py` runs the same two-stream blocks on either. For SIMO,
timm's fused `qkv` (with separate q/v biases, k unbiased) is split like open_clip's in_proj.
Only EVA01-style blocks are supported: absolute position embeddings, no RoPE, no gating
(EVA02's RoPE would have to be applied to the mask tokens' queries as for [CLS]: not done).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def is_eva_tower(visual: nn.Module) -> bool:
    """True for open_clip's TimmModel wrapping timm's Eva."""
    return type(getattr(visual, "trunk", None)).__name__ == "Eva"


class EvaSplitAttention(nn.Module):
    """timm EvaAttention with separate q/k/v projections (a drop-in for its forward)."""

    def __init__(self, attn: nn.Module):
        super().__init__()
        if attn.qkv is None or attn.gate is not None or not isinstance(attn.q_norm, nn.Identity) \
                or not isinstance(attn.k_norm, nn.Identity):
            raise NotImplementedError("EvaSplitAttention: only EVA01-style attention (fused qkv, no gate, "
                                      "no q/k norm) is supported")
        dim_out, dim_in = attn.qkv.weight.shape[0] // 3, attn.qkv.weight.shape[1]
        self.num_heads = attn.num_heads
        has_bias = attn.q_bias is not None
        self.q_proj = nn.Linear(dim_in, dim_out, bias=has_bias)
        self.k_proj = nn.Linear(dim_in, dim_out, bias=False)  # EVA's k bias is a fixed zero buffer
        self.v_proj = nn.Linear(dim_in, dim_out, bias=has_bias)
        with torch.no_grad():
            for i, proj in enumerate((self.q_proj, self.k_proj, self.v_proj)):
                proj.weight.copy_(attn.qkv.weight[i * dim_out:(i + 1) * dim_out])
            if has_bias:
                self.q_proj.bias.copy_(attn.q_bias)
                self.v_proj.bias.copy_(attn.v_bias)
        self.norm = attn.norm
        self.out_proj = attn.proj

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, W] -> [B, H, L, W/H]."""
        b, n, w = x.shape
        return x.view(b, n, self.num_heads, w // self.num_heads).transpose(1, 2)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H, L, d] -> out_proj(norm([B, L, H*d]))."""
        b, h, n, d = x.shape
        return self.out_proj(self.norm(x.transpose(1, 2).reshape(b, n, h * d)))

    def forward(self, x, rope=None, attn_mask=None, is_causal=False):
        """timm EvaAttention-compatible call."""
        if rope is not None:
            raise NotImplementedError("EvaSplitAttention: RoPE (EVA02) is not supported")
        q, k, v = self.heads(self.q_proj(x)), self.heads(self.k_proj(x)), self.heads(self.v_proj(x))
        return self.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal))


def split_eva_attention(visual: nn.Module) -> None:
    """Replace every Eva block's attention by `EvaSplitAttention` (in place)."""
    trunk = visual.trunk
    if getattr(trunk, "rope", None) is not None:
        raise NotImplementedError("EVA towers with RoPE (EVA02) are not supported")
    for block in trunk.blocks:
        if not isinstance(block.attn, EvaSplitAttention):
            block.attn = EvaSplitAttention(block.attn)


@dataclass
class VisionTower:
    """What the mask-token forward needs from a vision tower, for both tower kinds."""

    blocks: list  # each with attention `.attn` (SplitAttention / EvaSplitAttention)
    width: int
    output_dim: int
    patch_size: tuple[int, int]
    grid_size: tuple[int, int]
    patch_embed: Callable[[torch.Tensor], torch.Tensor]  # pixels -> [B, W, gh, gw]
    class_token: torch.Tensor  # [W]
    position_embedding: torch.Tensor  # [1 + g0*g0, W]
    pre_norm: Callable  # applied to tokens before the blocks
    block_parts: Callable  # block -> (norm1, attn, scale1, norm2, mlp, scale2)
    head: Callable  # final tokens [..., W] -> embeddings [..., D]


def _identity(x):
    return x


def vision_tower(visual: nn.Module) -> VisionTower:
    """A `VisionTower` view of an open_clip VisionTransformer or an open_clip TimmModel(Eva)."""
    if is_eva_tower(visual):
        t = visual.trunk
        return VisionTower(
            blocks=list(t.blocks), width=t.embed_dim, output_dim=t.head.out_features,
            patch_size=tuple(t.patch_embed.patch_size), grid_size=tuple(t.patch_embed.grid_size),
            patch_embed=t.patch_embed.proj, class_token=t.cls_token[0, 0], position_embedding=t.pos_embed[0],
            pre_norm=t.norm_pre,
            block_parts=lambda b: (b.norm1, b.attn, (lambda x, g=b.gamma_1: x if g is None else g * x), b.norm2,
                                   b.mlp, (lambda x, g=b.gamma_2: x if g is None else g * x)),
            head=lambda x: visual.head(t.head(t.fc_norm(t.norm(x)))))
    return VisionTower(
        blocks=list(visual.transformer.resblocks), width=visual.transformer.width, output_dim=visual.output_dim,
        patch_size=tuple(visual.patch_size), grid_size=tuple(visual.grid_size), patch_embed=visual.conv1,
        class_token=visual.class_embedding, position_embedding=visual.positional_embedding, pre_norm=visual.ln_pre,
        block_parts=lambda b: (b.ln_1, b.attn, b.ls_1, b.ln_2, b.mlp, b.ls_2),
        head=lambda x: visual.ln_post(x) @ visual.proj)
