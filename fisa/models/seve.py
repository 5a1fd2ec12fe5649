"""SEVE (Eqs. 1-4): semantic-guided attention of mask tokens to the target class tokens.

Eq. 3-4: q = g_q([MASK]), k = g_k([TGT]), v = g_v([TGT]); [MASK]^ = softmax(q k^T) v.
Eq. 2: the enriched [MASK]^ then goes through CLIP's own f_q and attends to the image tokens under
the mask bias (Eq. 1, done in `mask_attention.py`).

The design is configuration (`model.seve`, reasons and the parameter arithmetic in docs/models.md):
- `layers`: the CLIP blocks SEVE runs in (`all`, `first`, `first_half`, `last_half`, `none`, or
  block indices);
- `shared`: one set of g_q/g_k/g_v for all those blocks (Eqs. 3-4 carry no layer index), or one set
  per block;
- `qk_dim`: the width of q and k (null = the vision width W); v is always W wide, because Eq. 3
  has no output projection and [MASK]^ replaces a W-wide token;
- `residual`: [MASK]^ = [MASK] + attention output, so the mask token keeps its own content.
Fixed choices: [TGT] = the vocabulary's text embeddings ([C, D]); multi-head with the CLIP block's
head count, scaled dot product; g_q, g_k, g_v randomly initialised (trunc-normal std 0.02, zero
bias), as the paper says.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NAMES = ("all", "first", "first_half", "last_half", "none")


class SemanticGuidedAttention(nn.Module):
    """Mask tokens cross-attend to target class tokens with new projections g_q, g_k, g_v (Eqs. 3-4).

    width W: the vision width; text_dim D: the class tokens' width; qk_dim: width of q and k
    (None = W); each of the `num_heads` heads uses qk_dim/H of q, k and W/H of v.
    """

    def __init__(self, width: int, text_dim: int, num_heads: int, qk_dim: int | None = None,
                 residual: bool = True):
        super().__init__()
        qk_dim = width if qk_dim is None else int(qk_dim)
        if width % num_heads or qk_dim % num_heads or qk_dim < 1:
            raise ValueError(f"model.seve: width {width} and qk_dim {qk_dim} must be positive multiples of "
                             f"the {num_heads} heads")
        self.num_heads, self.width, self.qk_dim = num_heads, width, qk_dim
        self.residual = residual
        self.g_q = nn.Linear(width, qk_dim)
        self.g_k = nn.Linear(text_dim, qk_dim)
        self.g_v = nn.Linear(text_dim, width)
        for lin in (self.g_q, self.g_k, self.g_v):
            nn.init.trunc_normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)

    def class_keys_values(self, class_tokens: torch.Tensor, batch: int, dtype: torch.dtype):
        """g_k, g_v of the class tokens [C, D] or [B, C, D] -> (k [B, H, C, qk/H], v [B, H, C, W/H]).
        A shared SEVE computes them once per forward (they do not depend on the block)."""
        if class_tokens.dim() == 2:
            class_tokens = class_tokens.unsqueeze(0).expand(batch, -1, -1)
        class_tokens = class_tokens.to(dtype)
        h = self.num_heads
        k = self.g_k(class_tokens).view(batch, -1, h, self.qk_dim // h).transpose(1, 2)
        v = self.g_v(class_tokens).view(batch, -1, h, self.width // h).transpose(1, 2)
        return k, v

    def forward(self, mask_tokens: torch.Tensor, class_tokens: torch.Tensor | None = None,
                keys_values: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """mask_tokens [B, Q, W], class_tokens [C, D] (or [B, C, D]), or their precomputed
        `class_keys_values` -> enriched mask tokens [B, Q, W]."""
        b, q_len, w = mask_tokens.shape
        h = self.num_heads
        if keys_values is None:
            keys_values = self.class_keys_values(class_tokens, b, mask_tokens.dtype)
        k, v = keys_values
        q = self.g_q(mask_tokens).view(b, q_len, h, self.qk_dim // h).transpose(1, 2)  # [B, H, Q, qk/H]
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, q_len, w)
        return mask_tokens + out if self.residual else out


def seve_layer_indices(layers, depth: int) -> list[int]:
    """Resolve `model.seve.layers` to sorted block indices of a `depth`-block tower.

    Names: "all", "first" (block 0), "first_half", "last_half", "none"; or a list of ints
    (negative counts from the end)."""
    named = {"all": range(depth), "first": range(min(1, depth)), "first_half": range(depth // 2),
             "last_half": range(depth // 2, depth), "none": range(0)}
    if isinstance(layers, str) and layers in named:
        return list(named[layers])
    if isinstance(layers, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
        bad = [i for i in layers if not -depth <= i < depth]
        if bad:
            raise ValueError(f"model.seve.layers: indices {bad} out of range for {depth} vision blocks")
        return sorted({i % depth for i in layers})
    raise ValueError(f"model.seve.layers: expected one of {list(LAYER_NAMES)} or a list of block indices, "
                     f"got {layers!r}")


def build_seve(seve_cfg: dict, heads_per_block: list[int], width: int, text_dim: int) -> tuple[nn.ModuleDict, list[int]]:
    """SEVE modules from `model.seve` {layers, shared, qk_dim, residual}.

    Returns (modules, block indices): with `shared` one module under the key "shared", else one per
    block under str(block index)."""
    for key in ("layers", "shared", "qk_dim", "residual"):
        if key not in seve_cfg:
            raise KeyError(f"model.seve.{key}: missing (see config.yaml defaults and docs/models.md)")
    blocks = seve_layer_indices(seve_cfg["layers"], len(heads_per_block))
    qk_dim, residual = seve_cfg["qk_dim"], bool(seve_cfg["residual"])
    modules = nn.ModuleDict()
    if not blocks:
        return modules, blocks
    if seve_cfg["shared"]:
        heads = {heads_per_block[i] for i in blocks}
        if len(heads) != 1:
            raise ValueError(f"model.seve.shared: blocks {blocks} have different head counts {sorted(heads)}")
        modules["shared"] = SemanticGuidedAttention(width, text_dim, heads.pop(), qk_dim, residual)
    else:
        for i in blocks:
            modules[str(i)] = SemanticGuidedAttention(width, text_dim, heads_per_block[i], qk_dim, residual)
    return modules, blocks
