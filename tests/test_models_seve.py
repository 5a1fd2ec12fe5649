"""SEVE (Eqs. 3-4) and the Distribution Adapter (Tab. 3c), against hand-written references."""
import math

import pytest
import torch

from fisa.models import build_model
from fisa.models.distribution_adapter import DistributionAdapter
from fisa.models.seve import SemanticGuidedAttention, seve_layer_indices

from test_models_mask_attention import model_cfg


def reference_seve(m, t, g_q, g_k, g_v, heads, residual):
    """Eqs. 3-4 written out head by head: q = g_q([MASK]), k = g_k([TGT]), v = g_v([TGT]); each head h
    takes its slice of q/k (qk/H wide) and of v (W/H wide); [MASK]^ = concat_h softmax(q_h k_h^T / sqrt(d_h)) v_h."""
    q = m @ g_q.weight.T + g_q.bias  # [B, Q, qk]
    k = t @ g_k.weight.T + g_k.bias  # [C, qk]
    v = t @ g_v.weight.T + g_v.bias  # [C, W]
    dq, dv = q.shape[-1] // heads, v.shape[-1] // heads
    outs = []
    for h in range(heads):
        qh, kh, vh = q[..., h * dq:(h + 1) * dq], k[:, h * dq:(h + 1) * dq], v[:, h * dv:(h + 1) * dv]
        att = torch.exp(qh @ kh.T / math.sqrt(dq))
        outs.append((att / att.sum(-1, keepdim=True)) @ vh)
    out = torch.cat(outs, dim=-1)
    return m + out if residual else out


@pytest.mark.parametrize("heads,qk_dim", [(1, None), (4, None), (4, 8), (2, 6)])
def test_semantic_guided_attention_matches_multi_head_eq3_4(heads, qk_dim):
    torch.manual_seed(0)
    sga = SemanticGuidedAttention(width=16, text_dim=6, num_heads=heads, qk_dim=qk_dim, residual=False)
    for p in sga.parameters():  # away from the small init, so the softmax is far from uniform
        torch.nn.init.normal_(p, std=0.5)
    m, t = torch.randn(2, 3, 16, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    sga = sga.double()
    assert sga.g_q.out_features == sga.g_k.out_features == (qk_dim or 16) and sga.g_v.out_features == 16
    ref = reference_seve(m, t, sga.g_q, sga.g_k, sga.g_v, heads, residual=False)
    torch.testing.assert_close(sga(m, t), ref, atol=1e-12, rtol=1e-10)
    sga.residual = True
    torch.testing.assert_close(sga(m, t), m + ref, atol=1e-12, rtol=1e-10)
    # per-image class tokens [B, C, D] give the same as the shared [C, D]
    torch.testing.assert_close(sga(m, t.expand(2, -1, -1)), m + ref, atol=1e-12, rtol=1e-10)
    with pytest.raises(ValueError, match="multiples"):
        SemanticGuidedAttention(width=16, text_dim=6, num_heads=4, qk_dim=6)


def reference_block(block, x, m, keep, sga, t):
    """One transformer block written from Eqs. 1-5 for the mask tokens, head by head:
    [MASK]^ = SEVE(LN1([MASK])) (Eqs. 3-4), q^ = f_q([MASK]^), k/v = f_k/f_v(LN1([IMG])) (Eq. 2),
    softmax(q^ k^T / sqrt(d) + M) v with M = 0 where `keep`, -inf elsewhere (Eqs. 1, 5); then CLIP's
    out projection, residual and MLP."""
    attn = block.attn
    heads = attn.num_heads
    hx, hm = block.ln_1(x), block.ln_1(m)
    mhat = reference_seve(hm, t, sga.g_q, sga.g_k, sga.g_v, sga.num_heads, sga.residual)
    q = mhat @ attn.q_proj.weight.T + attn.q_proj.bias
    k = hx @ attn.k_proj.weight.T + attn.k_proj.bias
    v = hx @ attn.v_proj.weight.T + attn.v_proj.bias
    d = q.shape[-1] // heads
    bias = torch.zeros(keep.shape, dtype=q.dtype).masked_fill(~keep, float("-inf"))  # Eq. 5
    outs = []
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        logits = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(d) + bias  # Eq. 1
        outs.append(torch.softmax(logits, dim=-1) @ v[..., sl])
    out = torch.cat(outs, dim=-1) @ attn.out_proj.weight.T + attn.out_proj.bias
    m = m + out
    return m + block.mlp(block.ln_2(m))


def test_mask_token_block_with_seve_matches_eq1_to_4_multi_head():
    from test_models_mask_attention import TINY

    from fisa.models.clip_backbone import create_clip
    from fisa.models.mask_attention import mask_token_block

    clip = create_clip(TINY, init_seed=3).double().eval()
    block = clip.visual.transformer.resblocks[1]
    assert block.attn.num_heads == 4
    torch.manual_seed(6)
    sga = SemanticGuidedAttention(width=64, text_dim=64, num_heads=4, qk_dim=12, residual=True).double()
    for p in sga.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x, m, t = torch.randn(2, 17, 64).double(), torch.randn(2, 3, 64).double(), torch.randn(5, 64).double()
    keep = torch.rand(2, 3, 17) > 0.5
    keep[..., 0] = True
    with torch.no_grad():
        _, ours = mask_token_block(block, x, m, keep, sga, t)
        ref = reference_block(block, x, m, keep, sga, t)
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-8)


def test_seve_layer_selection():
    assert seve_layer_indices("last_half", 24) == list(range(12, 24))
    assert seve_layer_indices("first_half", 24) == list(range(12))
    assert seve_layer_indices("first", 24) == [0]
    assert seve_layer_indices("all", 3) == [0, 1, 2]
    assert seve_layer_indices("none", 3) == []
    assert seve_layer_indices([-1, 0], 4) == [0, 3]
    with pytest.raises(ValueError, match=r"indices \[7\] out of range for 4"):
        seve_layer_indices([7], 4)
    with pytest.raises(ValueError, match="model.seve.layers"):
        seve_layer_indices("middle", 4)
    with pytest.raises(ValueError, match="model.seve.layers"):
        seve_layer_indices([True], 4)
    model = build_model(model_cfg(seve={"layers": [0, 3], "shared": False, "qk_dim": None, "residual": False}),
                        "seve")
    assert sorted(model.seve) == ["0", "3"] and model.seve["0"].residual is False
    assert model.seve["0"] is not model.seve["3"] and model.seve["0"].qk_dim == 64
    with pytest.raises(KeyError, match="model.seve.shared"):
        build_model(model_cfg(seve={"layers": "all", "qk_dim": None, "residual": True}), "seve")


def _block_log(model, layers, shared):
    """Run a FISA forward and log, in call order, each block's query projection (block index) and
    each SEVE call ("S<module key>")."""
    log, handles = [], []
    for i, block in enumerate(model.clip.visual.transformer.resblocks):
        handles.append(block.attn.q_proj.register_forward_hook(lambda *a, i=i: log.append(i)))
    for key, mod in model.seve.items():
        handles.append(mod.g_q.register_forward_hook(lambda *a, key=key: log.append(f"S{key}")))
    vocab = torch.nn.functional.normalize(torch.randn(3, 64), dim=-1)
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64) * 255, vocab, proposals=torch.randn(1, 4, 16, 16))
    for h in handles:
        h.remove()
    return log


@pytest.mark.parametrize("layers,shared,expected", [
    ("all", True, [0, 1, 2, 3]), ("first", True, [0]), ("last_half", False, [2, 3]),
    ("first_half", True, [0, 1]), ([1, 3], False, [1, 3]), ("none", True, [])])
def test_seve_runs_in_the_configured_blocks(layers, shared, expected):
    torch.manual_seed(0)
    model = build_model(model_cfg(seve={"layers": layers, "shared": shared, "qk_dim": 12, "residual": True}), "fisa")
    assert model.seve_blocks == expected
    assert len(model.seve) == (min(1, len(expected)) if shared else len(expected))
    log = _block_log(model, layers, shared)
    # per block: q_proj of the image tokens, then (SEVE) and q_proj of the mask tokens
    want = []
    for i in range(4):
        want += [i] + ([f"S{'shared' if shared else i}"] if i in expected else []) + [i]
    assert log == want


def test_shared_seve_has_one_set_of_g_and_computes_class_keys_once():
    torch.manual_seed(0)
    model = build_model(model_cfg(seve={"layers": "all", "shared": True, "qk_dim": 12, "residual": True}), "fisa")
    calls = []
    h = model.seve["shared"].g_k.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64) * 255, torch.randn(3, 64), proposals=torch.randn(1, 4, 16, 16))
    h.remove()
    assert len(calls) == 1
    per_block = build_model(model_cfg(seve={"layers": "all", "shared": False, "qk_dim": 12, "residual": True}),
                            "fisa")
    n_shared = sum(p.numel() for p in model.seve.parameters())
    assert n_shared == (64 * 12 + 12) * 2 + (64 * 64 + 64)  # g_q W->12, g_k D->12, g_v D->W
    assert sum(p.numel() for p in per_block.seve.parameters()) == 4 * n_shared


def test_cls_and_image_tokens_are_bit_identical_to_plain_open_clip_with_seve():
    """SEVE and the mask tokens never reach [CLS] or the image tokens: FISA's are bit for bit
    those of open_clip's own forward on the same (split-attention) tower."""
    torch.manual_seed(0)
    model = build_model(model_cfg(seve={"layers": "all", "shared": False, "qk_dim": 12, "residual": True}), "fisa")
    for p in model.seve.parameters():  # SEVE far from its small init
        torch.nn.init.normal_(p, std=0.5)
    visual = model.clip.visual
    pixels = model.clip_pixels(torch.rand(2, 3, 64, 64) * 255)
    vocab = torch.randn(3, 64)
    from fisa.models.mask_attention import encode_with_mask_tokens

    with torch.no_grad():
        enc = encode_with_mask_tokens(visual, pixels, torch.randn(2, 5, 16, 16) * 3, model.patch_mask,
                                      model.seve_modules(), vocab)
        plain_cls = visual(pixels)  # open_clip's VisionTransformer.forward
        plain_tokens = visual.transformer(visual._embeds(pixels))
    assert torch.equal(enc["image_tokens"], plain_tokens)
    assert torch.equal(enc["cls_embedding"], plain_cls)


@pytest.mark.parametrize("layers,hidden,kernel", [(1, 8, 3), (2, 8, 3), (3, 8, 3), (2, 4, 5)])
def test_distribution_adapter_is_identity_at_init_and_sized(layers, hidden, kernel):
    torch.manual_seed(0)
    adapter = DistributionAdapter(layers, hidden, kernel)
    x = torch.randn(2, 5, 12, 12)
    torch.testing.assert_close(adapter(x), x)
    convs = [m for m in adapter.layers if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == layers
    k2 = kernel * kernel
    expected = {1: k2 + 1, 2: (k2 * hidden + hidden) + (k2 * hidden + 1),
                3: (k2 * hidden + hidden) + (k2 * hidden * hidden + hidden) + (k2 * hidden + 1)}[layers]
    assert sum(p.numel() for p in adapter.parameters()) == expected


def test_adapter_width_and_kernel_come_from_the_config():
    """model.adapter_channels / adapter_kernel_size size the adapter the factory builds (the paper's
    default of 153 parameters = 2 layers, 8 channels, 3x3); an even kernel is refused, naming the key."""
    def adapter_size(**over):
        return sum(p.numel() for p in build_model(model_cfg(**over), "fisa").distribution_adapter.parameters())

    assert adapter_size() == 153
    assert adapter_size(adapter_channels=4, adapter_kernel_size=5) == (25 * 4 + 4) + (25 * 4 + 1)
    with pytest.raises(ValueError, match="model.adapter_kernel_size"):
        build_model(model_cfg(adapter_kernel_size=4), "fisa")


def test_adapter_acts_per_mask_and_depth_zero_means_none():
    torch.manual_seed(0)
    adapter = DistributionAdapter(2, 8, 3)
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
