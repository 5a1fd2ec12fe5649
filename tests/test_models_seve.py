"""SEVE (Eqs. 3-4) and the Distribution Adapter (Tab. 3c), against hand-written references."""
import math

import pytest
import torch

from fisa.models import build_model
from fisa.models.distribution_adapter import DistributionAdapter
from fisa.models.seve import SemanticGuidedAttention, seve_layer_indices

from test_models_mask_attention import model_cfg


def test_semantic_guided_attention_matches_eq3():
    torch.manual_seed(0)
    sga = SemanticGuidedAttention(width=8, text_dim=6, num_heads=1, residual=False)
    m, t = torch.randn(2, 3, 8), torch.randn(5, 6)
    q, k, v = sga.g_q(m), sga.g_k(t), sga.g_v(t)  # Eq. 4
    ref = torch.softmax(q @ k.T / math.sqrt(8), dim=-1) @ v  # Eq. 3 (scaled dot product)
    torch.testing.assert_close(sga(m, t), ref, atol=1e-6, rtol=1e-5)
    sga.residual = True
    torch.testing.assert_close(sga(m, t), m + ref, atol=1e-6, rtol=1e-5)


def test_seve_layer_selection():
    assert seve_layer_indices("last_half", 24) == list(range(12, 24))
    assert seve_layer_indices("all", 3) == [0, 1, 2]
    assert seve_layer_indices("none", 3) == []
    assert seve_layer_indices([-1, 0], 4) == [0, 3]
    with pytest.raises(ValueError, match=r"indices \[7\] out of range for 4"):
        seve_layer_indices([7], 4)
    with pytest.raises(ValueError, match="model.seve.layers"):
        seve_layer_indices("first", 4)
    model = build_model(model_cfg(seve={"layers": [0, 3], "residual": False}), "seve")
    assert sorted(model.seve) == ["0", "3"] and model.seve["0"].residual is False


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_distribution_adapter_is_identity_at_init_and_sized(layers):
    torch.manual_seed(0)
    adapter = DistributionAdapter(layers)
    x = torch.randn(2, 5, 12, 12)
    torch.testing.assert_close(adapter(x), x)
    convs = [m for m in adapter.layers if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == layers
    hidden = 8
    expected = {1: 9 + 1, 2: (9 * hidden + hidden) + (9 * hidden + 1),
                3: (9 * hidden + hidden) + (9 * hidden * hidden + hidden) + (9 * hidden + 1)}[layers]
    assert sum(p.numel() for p in adapter.parameters()) == expected


def test_adapter_acts_per_mask_and_depth_zero_means_none():
    torch.manual_seed(0)
    adapter = DistributionAdapter(2)
    for p in adapter.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(1, 3, 10, 10)
    y = adapter(x)
    x2 = x.clone()
    x2[0, 1] += 5  # another mask changes: mask 0's adapted logits do not
    torch.testing.assert_close(adapter(x2)[0, 0], y[0, 0])
    assert build_model(model_cfg(adapter_layers=0), "fisa").distribution_adapter is None
    with pytest.raises(ValueError, match="adapter_layers"):
        build_model(model_cfg(adapter_layers=-1), "fisa")
