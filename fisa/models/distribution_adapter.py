"""Distribution Adapter: a few conv layers on the mask proposals before they become attention masks.

The paper gives only the layer count (2 by default, Tab. 3c ablates 0-3). Our choices
(docs/models.md): it acts on each proposal's mask logits independently ([B*Q, 1, h, w]), 3x3
kernels, GELU between layers, a hidden width of 8 channels, and a residual around the stack whose
last conv starts at zero, so at initialisation the adapter is the identity and training starts from
the generator's own masks.
"""
from __future__ import annotations

import torch
from torch import nn


class DistributionAdapter(nn.Module):
    """`num_layers` convs (`kernel_size`, `hidden_channels` wide, GELU between) with a zero-initialised
    residual on mask logits (model.adapter_layers / adapter_channels / adapter_kernel_size)."""

    def __init__(self, num_layers: int, hidden_channels: int, kernel_size: int):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"model.adapter_layers: DistributionAdapter needs >= 1 layer, got {num_layers}")
        if hidden_channels < 1:
            raise ValueError(f"model.adapter_channels: expected >= 1, got {hidden_channels}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"model.adapter_kernel_size: expected an odd size (same-size output), got {kernel_size}")
        pad = kernel_size // 2
        chans = [1] + [hidden_channels] * (num_layers - 1) + [1]
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers.append(nn.Conv2d(chans[i], chans[i + 1], kernel_size, padding=pad))
            if i < num_layers - 1:
                layers.append(nn.GELU())
        self.layers = nn.Sequential(*layers)
        nn.init.zeros_(self.layers[-1].weight)
        nn.init.zeros_(self.layers[-1].bias)

    def forward(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """mask_logits [B, Q, h, w] -> adapted mask logits [B, Q, h, w]."""
        b, q, h, w = mask_logits.shape
        # channels_last: ~2x faster convs on CPU for these 1-channel, many-image batches (measured)
        x = mask_logits.reshape(b * q, 1, h, w).contiguous(memory_format=torch.channels_last)
        return (x + self.layers(x)).contiguous().reshape(b, q, h, w)
