"""CLIP through open_clip: model creation (incl. the tiny configs), the split q/k/v attention.

open_clip's vision blocks use `nn.MultiheadAttention`, which fuses the query, key and value
projections into one `in_proj_weight` [3W, W]. FISA's SIMO trains only the query projection, so
at build time every vision block's attention is replaced by `SplitAttention`, holding four plain
`nn.Linear` layers (q_proj, k_proj, v_proj, out_proj) initialised from the fused weights. This is
the "real mechanism" for q-only training: k/v are separate frozen tensors the optimizer never sees,
and peft's LoRA can target the projections by name. `SplitAttention` keeps
`nn.MultiheadAttention`'s call signature, so open_clip's own forward still runs on the split model.
"""
from __future__ import annotations

import logging
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from fisa.models.eva_backbone import is_eva_tower, split_eva_attention

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
TINY_CLIP_PREFIX = "fisa-tiny-vit"
_registered = False


def register_model_configs() -> None:
    """Register the tiny open_clip configs (`fisa-tiny-vit-*.json`) with open_clip, once."""
    global _registered
    if _registered:
        return
    from fisa.models import tiny_eva  # noqa: F401  (registers the tiny timm Eva with timm)

    for path in sorted(MODEL_CONFIG_DIR.glob(f"{TINY_CLIP_PREFIX}-*.json")) + \
            sorted(MODEL_CONFIG_DIR.glob("fisa-tiny-eva*.json")):
        open_clip.add_model_config(path)
    _registered = True


def harness_clip_path(cache_dir: str | Path, backbone: str) -> Path:
    """Weights of a `source: harness` backbone: <cache_dir>/clip/<logical backbone name>.pt."""
    return Path(cache_dir) / "clip" / f"{backbone}.pt"


def create_clip(clip_cfg: dict, cache_dir: str | None = None, init_seed: int = 0,
                backbone: str | None = None, weights: str = "pretrained", device=None) -> nn.Module:
    """Build the open_clip CLIP model named in `clip_cfg` ({model, pretrained, image_size, source?}).

    `pretrained: null` gives random weights drawn from `init_seed` (the global RNG is left
    untouched), so every small-preset experiment shares the same "pre-trained" CLIP.
    `source: harness` loads the weights `python -m fisa.engine.pretrain_clip` wrote to
    `harness_clip_path(cache_dir, backbone)` (the small preset's "pre-trained" tiny CLIP).
    `weights="random"` builds the architecture the weights would need (QuickGELU where the
    `pretrained` tag was trained with it) with random weights and loads nothing. `device`: build
    on it (open_clip's `device`; "meta" for shapes only).
    """
    register_model_configs()
    name = clip_cfg["model"]
    if name not in open_clip.list_models():
        raise ValueError(f"model.clip.model: unknown open_clip model {name!r} "
                         f"(tiny configs: {sorted(p.stem for p in MODEL_CONFIG_DIR.glob('fisa-tiny-vit-*.json'))})")
    vision_cfg = (open_clip.get_model_config(name) or {}).get("vision_cfg", {})
    timm_name = vision_cfg.get("timm_model_name")
    if timm_name and not timm_name.startswith(("eva_", "fisa_tiny_eva")):  # fail before building it
        raise NotImplementedError(
            f"model.clip.model={name!r}: its visual tower is timm's {timm_name!r}; mask tokens are implemented "
            "for open_clip's native VisionTransformer and EVA01-style timm Eva towers only (docs/models.md)")
    pretrained = clip_cfg["pretrained"]  # required by the schema (null: random weights)
    quick_gelu = uses_quick_gelu(name, pretrained)  # the architecture of the named weights, loaded or not
    if weights == "random":
        pretrained = None
    clip_cache = str(Path(cache_dir) / "open_clip") if cache_dir else None
    root_logger = logging.getLogger()
    level = root_logger.level
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        if pretrained is None:  # random weights are intended here; silence open_clip's warning
            root_logger.setLevel(logging.ERROR)
        try:
            model = open_clip.create_model(name, pretrained=pretrained, cache_dir=clip_cache,
                                           force_quick_gelu=quick_gelu, device=device or "cpu")
        finally:
            root_logger.setLevel(level)
    if clip_cfg.get("source", "open_clip") == "harness" and weights != "random":
        load_harness_weights(model, cache_dir, backbone)
    elif clip_cfg.get("source", "open_clip") not in ("open_clip", "harness"):
        raise ValueError(f"model.clip.source: expected open_clip or harness, got {clip_cfg['source']!r}")
    visual = model.visual
    if is_eva_tower(visual):
        split_eva_attention(visual)
        return model
    if not hasattr(visual, "transformer") or not hasattr(visual, "class_embedding"):
        raise NotImplementedError(
            f"model.clip.model={name!r}: its visual tower is {type(visual).__name__}; mask tokens are "
            "implemented for open_clip's native VisionTransformer only (timm towers such as EVA are "
            "not supported yet, see docs/models.md)")
    if visual.attn_pool is not None or visual.pool_type != "tok":
        raise NotImplementedError(f"model.clip.model={name!r}: mask tokens need [CLS] pooling ('tok'), "
                                  f"got pool_type={visual.pool_type!r}")
    split_attention(visual)
    return model


def load_harness_weights(model: nn.Module, cache_dir: str | None, backbone: str | None) -> None:
    """Load a harness-pretrained open_clip state dict (fused attention layout) into `model`."""
    if not cache_dir or not backbone:
        raise ValueError("model.clip.source is 'harness': building it needs cache_dir and the logical "
                         "backbone name (model.backbone) to find <cache_dir>/clip/<backbone>.pt")
    path = harness_clip_path(cache_dir, backbone)
    if not path.exists():
        raise FileNotFoundError(
            f"harness-pretrained CLIP for backbone {backbone!r} not found: {path}. Make it with "
            f"`python -m fisa.engine.fetch --preset <preset> --backbone {backbone}` (or "
            f"`python -m fisa.engine.pretrain_clip --preset <preset> --backbone {backbone}`)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: not a state dict of open_clip model for backbone {backbone!r} "
                         f"(re-run the pre-training): {str(e).splitlines()[0]}") from e


def uses_quick_gelu(name: str, pretrained: str | None) -> bool:
    """Whether the pretrained tag was trained with QuickGELU (OpenAI's weights were). open_clip
    only warns on a mismatch, and the plain config names (ViT-L-14-336) use nn.GELU, so without
    this the `openai` weights would run with the wrong activation."""
    if not pretrained:
        return False
    return bool(open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu", False))


class SplitAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (a drop-in for open_clip's MHA)."""

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        if not mha._qkv_same_embed_dim or mha.in_proj_bias is None:
            raise NotImplementedError("SplitAttention expects a fused, biased in_proj (CLIP's layout)")
        width = mha.embed_dim
        self.num_heads = mha.num_heads
        self.batch_first = mha.batch_first
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(width, width) for _ in range(3))
        self.out_proj = nn.Linear(width, width)
        with torch.no_grad():
            for i, proj in enumerate((self.q_proj, self.k_proj, self.v_proj)):
                proj.weight.copy_(mha.in_proj_weight[i * width:(i + 1) * width])
                proj.bias.copy_(mha.in_proj_bias[i * width:(i + 1) * width])
            self.out_proj.weight.copy_(mha.out_proj.weight)
            self.out_proj.bias.copy_(mha.out_proj.bias)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, W] -> [B, H, L, W/H]."""
        b, n, w = x.shape
        return x.view(b, n, self.num_heads, w // self.num_heads).transpose(1, 2)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H, L, d] -> out_proj([B, L, H*d])."""
        b, h, n, d = x.shape
        return self.out_proj(x.transpose(1, 2).reshape(b, n, h * d))

    def forward(self, query, key=None, value=None, need_weights=False, attn_mask=None):
        """`nn.MultiheadAttention`-compatible call (self-attention only); returns (output, None)."""
        if not self.batch_first:
            query = query.transpose(0, 1)
        q, k, v = self.heads(self.q_proj(query)), self.heads(self.k_proj(query)), self.heads(self.v_proj(query))
        out = self.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask))
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, None


def split_attention(visual: nn.Module) -> None:
    """Replace every vision block's fused attention by `SplitAttention` (in place)."""
    for block in visual.transformer.resblocks:
        if isinstance(block.attn, nn.MultiheadAttention):
            block.attn = SplitAttention(block.attn)


def interpolated_position_embedding(visual: nn.Module, grid: tuple[int, int]) -> torch.Tensor:
    """CLIP's position embedding resized (bilinear) to a `grid` of patches -> [1 + gh*gw, W]."""
    return resize_position_embedding(visual.positional_embedding, tuple(visual.grid_size), grid)


def resize_position_embedding(pos: torch.Tensor, old_grid: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """[1 + g0h*g0w, W] ([CLS] first) -> [1 + gh*gw, W], patch part resized bilinearly."""
    g0h, g0w = old_grid
    if (g0h, g0w) == tuple(grid):
        return pos
    cls_pos, patch_pos = pos[:1], pos[1:]
    patch_pos = patch_pos.reshape(1, g0h, g0w, -1).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos, size=grid, mode="bilinear", align_corners=False)
    return torch.cat([cls_pos, patch_pos.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)], dim=0)
