"""A tiny EVA01-style timm model (`fisa_tiny_eva`) so tests exercise the EVA tower path offline."""
from __future__ import annotations

from timm.models import register_model
from timm.models.eva import Eva


@register_model
def fisa_tiny_eva(pretrained: bool = False, **kwargs) -> Eva:
    """EVA01 layout (fused qkv with q/v biases, abs. position embedding, [CLS] pooling), tiny sizes."""
    if pretrained:
        raise ValueError("fisa_tiny_eva has no pretrained weights")
    args = dict(img_size=64, patch_size=8, embed_dim=64, depth=3, num_heads=4, mlp_ratio=4.0)
    # timm's factory passes its bookkeeping kwargs; Eva takes only architecture arguments
    args.update({k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")})
    return Eva(**args)
