"""SEVE (Eqs. 1-4): semantic-guided attention of mask tokens to the target class tokens.

Eq. 3-4: q = g_q([MASK]), k = g_k([TGT]), v = g_v([TGT]); [MASK]^ = softmax(q k^T) v.
Eq. 2: the enriched [MASK]^ then goes through CLIP's own f_q and attends to the image tokens under
the mask bias (Eq. 1, done in `mask_attention.py`).

Choices the paper leaves open (reasons in docs/models.md):
- [TGT] = the vocabulary's text embeddings (CLIP's text tower output, [C, D]); g_k, g_v map D -> W.
- multi-head (CLIP's head count for the block), scaled dot product, no output projection (Eq. 3).
- `residual=True`: [MASK]^ = [MASK] + attention output, so the mask token keeps its own content.
- g_q, g_k, g_v are randomly initialised (trunc-normal std 0.02, zero bias) as the paper says.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SemanticGuidedAttention(nn.Module):
    """Mask tokens cross-attend to target class tokens with new projections g_q, g_k, g_v."""

    def __init__(self, width: int, text_dim: int, num_heads: int, residual: bool = True):
        super().__init__()
        if width % num_heads:
            raise ValueError(f"SEVE: width {width} not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.residual = residual
        self.g_q = nn.Linear(width, width)
        self.g_k = nn.Linear(text_dim, width)
        self.g_v = nn.Linear(text_dim, width)
        for lin in (self.g_q, self.g_k, self.g_v):
            nn.init.trunc_normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)

    def forward(self, mask_tokens: torch.Tensor, class_tokens: torch.Tensor) -> torch.Tensor:
        """mask_tokens [B, Q, W], class_tokens [C, D] (or [B, C, D]) -> enriched mask tokens [B, Q, W]."""
        b, q_len, w = mask_tokens.shape
        h = self.num_heads
        if class_tokens.dim() == 2:
            class_tokens = class_tokens.unsqueeze(0).expand(b, -1, -1)
        class_tokens = class_tokens.to(mask_tokens.dtype)
        q = self.g_q(mask_tokens).view(b, q_len, h, w // h).transpose(1, 2)  # [B, H, Q, d]
        k = self.g_k(class_tokens).view(b, -1, h, w // h).transpose(1, 2)  # [B, H, C, d]
        v = self.g_v(class_tokens).view(b, -1, h, w // h).transpose(1, 2)  # [B, H, C, d]
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, q_len, w)
        return mask_tokens + out if self.residual else out


def seve_layer_indices(layers, depth: int) -> list[int]:
    """Resolve `model.seve.layers` ("last_half" | "all" | "none" | list of ints) to block indices."""
    if layers == "last_half":
        return list(range(depth // 2, depth))
    if layers == "all":
        return list(range(depth))
    if layers in ("none", None):
        return []
    if isinstance(layers, (list, tuple)) and all(isinstance(i, int) for i in layers):
        bad = [i for i in layers if not -depth <= i < depth]
        if bad:
            raise ValueError(f"model.seve.layers: indices {bad} out of range for {depth} vision blocks")
        return sorted({i % depth for i in layers})
    raise ValueError(f"model.seve.layers: expected 'last_half', 'all', 'none' or a list of ints, got {layers!r}")
