"""Mask tokens on open_clip's VisionTransformer: CLIP's own path unchanged, Eq. 5 masking, no NaN."""
import json

import open_clip
import pytest
import torch
import torch.nn.functional as F

from fisa.models import build_model
from fisa.models.clip_backbone import SplitAttention, create_clip, interpolated_position_embedding, register_model_configs
from fisa.models.mask_attention import encode_with_mask_tokens, mask_token_block, patch_attention_mask

TINY = {"model": "fisa-tiny-vit-l", "pretrained": None, "image_size": 64}


def model_cfg(**over):
    cfg = {"backbone": "vit_l14_336", "generator": "swin_b", "num_proposals": 16, "adapter_layers": 2,
           "lora_rank": None, "seve": {"layers": "last_half", "residual": True}, "prompt_templates": "single",
           "clip": dict(TINY), "generator_config": {"source": "harness", "config": "fisa-tiny-m2f-swin"},
           "synonyms": "average", "void": "learned"}
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def clip_pair():
    """Our split CLIP and an untouched open_clip model with the same (seeded) weights."""
    ours = create_clip(TINY, init_seed=3)
    register_model_configs()
    torch.manual_seed(3)
    ref = open_clip.create_model("fisa-tiny-vit-l", pretrained=None)
    return ours.eval(), ref.eval()


def test_split_attention_equals_multihead_attention():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=True)
    split = SplitAttention(mha)
    x = torch.randn(2, 7, 32)
    mask = torch.rand(2 * 4, 7, 7) > 0.3
    mask[..., 0] = True
    ref, _ = mha(x, x, x, need_weights=False)
    out, _ = split(x, x, x, need_weights=False)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # boolean mask: MHA's True means "masked out", SDPA's True means "attend"
    ref_m, _ = mha(x, x, x, need_weights=False, attn_mask=~mask)
    out_m, _ = split(x, attn_mask=mask.view(2, 4, 7, 7))
    torch.testing.assert_close(out_m, ref_m, atol=1e-5, rtol=1e-5)


def test_cls_and_image_tokens_equal_plain_open_clip(clip_pair):
    ours, ref = clip_pair
    torch.manual_seed(1)
    pixels = torch.randn(2, 3, 64, 64)
    masks = torch.randn(2, 5, 16, 16)
    with torch.no_grad():
        enc = encode_with_mask_tokens(ours.visual, pixels, masks)
        ref_cls = ref.visual(pixels)
        ref_tokens = ref.visual.transformer(ref.visual._embeds(pixels))
        plain_split = ours.visual(pixels)  # open_clip's own forward on the split model still works
    torch.testing.assert_close(enc["cls_embedding"], ref_cls, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(enc["image_tokens"], ref_tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain_split, ref_cls, atol=1e-5, rtol=1e-5)


def test_whole_image_mask_equals_cls_and_empty_mask_is_finite(clip_pair):
    ours, _ = clip_pair
    torch.manual_seed(2)
    pixels = torch.randn(2, 3, 64, 64)
    masks = torch.full((2, 3, 16, 16), -5.0)
    masks[:, 0] = 5.0  # whole image
    masks[:, 2, :4, :4] = 5.0  # one corner; mask 1 stays empty
    with torch.no_grad():
        enc = encode_with_mask_tokens(ours.visual, pixels, masks)
    torch.testing.assert_close(enc["region_embeddings"][:, 0], enc["cls_embedding"], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(enc["region_embeddings"]).all()
    assert not torch.allclose(enc["region_embeddings"][:, 2], enc["cls_embedding"], atol=1e-3)


def test_patch_attention_mask_eq5():
    masks = torch.full((1, 2, 16, 16), -1.0)
    masks[0, 0, 5, 9] = 1.0  # one pixel -> the patch holding it (grid 4x4, 4x4 pixels per patch)
    keep = patch_attention_mask(masks, (4, 4))
    assert keep.shape == (1, 2, 17)
    assert keep[0, :, 0].all()  # [CLS] always visible
    expected = torch.zeros(16, dtype=torch.bool)
    expected[(5 // 4) * 4 + 9 // 4] = True
    assert torch.equal(keep[0, 0, 1:], expected)
    assert not keep[0, 1, 1:].any()


def test_block_mask_token_ignores_tokens_outside_its_mask(clip_pair):
    ours, _ = clip_pair
    block = ours.visual.transformer.resblocks[0]
    torch.manual_seed(4)
    x = torch.randn(1, 17, 64)
    m = torch.randn(1, 2, 64)
    keep = torch.zeros(1, 2, 17, dtype=torch.bool)
    keep[..., 0] = True
    keep[0, 0, 1:5] = True  # mask 0 sees patches 0-3
    keep[0, 1, 1:] = True  # mask 1 sees everything
    x2 = x.clone()
    x2[0, 9:] += torch.randn(8, 64)  # perturb patches outside mask 0
    with torch.no_grad():
        xa, ma = mask_token_block(block, x, m, keep)
        xb, mb = mask_token_block(block, x2, m, keep)
    torch.testing.assert_close(ma[0, 0], mb[0, 0], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(ma[0, 1], mb[0, 1], atol=1e-4)
    assert not torch.allclose(xa[0, 0], xb[0, 0], atol=1e-4)  # [CLS] sees the change


def test_pixels_outside_mask_do_not_change_its_embedding_single_layer(tmp_path):
    # With one block, image tokens have not mixed yet, so the end-to-end property holds exactly.
    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "head_width": 16, "patch_size": 8},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    path = tmp_path / "fisa-test-one-layer.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    clip = create_clip({"model": "fisa-test-one-layer", "pretrained": None}, init_seed=0).eval()
    torch.manual_seed(5)
    img = torch.randn(1, 3, 64, 64)
    mask = torch.full((1, 2, 64, 64), -1.0)
    mask[0, 0, :16, :24] = 1.0  # covers patches in rows 0-1, cols 0-2
    mask[0, 1] = 1.0
    img2 = img.clone()
    img2[..., 32:, 32:] = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a = encode_with_mask_tokens(clip.visual, img, mask)["region_embeddings"]
        b = encode_with_mask_tokens(clip.visual, img2, mask)["region_embeddings"]
    torch.testing.assert_close(a[0, 0], b[0, 0], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(a[0, 1], b[0, 1], atol=1e-4)


def test_position_embedding_interpolation(clip_pair):
    ours, _ = clip_pair
    v = ours.visual
    assert interpolated_position_embedding(v, v.grid_size) is v.positional_embedding
    pos = interpolated_position_embedding(v, (12, 16))
    assert pos.shape == (1 + 12 * 16, v.positional_embedding.shape[1])
    torch.testing.assert_close(pos[0], v.positional_embedding[0])
    # independent reference: bilinear resize of the 8x8 grid through torch's own grid_sample
    grid = v.positional_embedding[1:].T.reshape(1, -1, 8, 8)
    ys = (torch.arange(12) + 0.5) / 12 * 2 - 1
    xs = (torch.arange(16) + 0.5) / 16 * 2 - 1
    g = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)[None]
    ref = F.grid_sample(grid, g, mode="bilinear", align_corners=False, padding_mode="border")
    torch.testing.assert_close(pos[1:], ref[0].flatten(1).T, atol=1e-5, rtol=1e-5)


def test_model_runs_at_other_sizes_and_rejects_bad_input():
    model = build_model(model_cfg(clip={**TINY, "image_size": 96}), "fisa")
    vocab = model.encode_vocabulary([["cat"], ["dog"]])
    out = model(torch.rand(1, 3, 80, 112) * 255, vocab)
    assert out["class_logits"].shape == (1, 16, 3)
    assert out["mask_logits"].shape == (1, 16, 20, 28)
    with pytest.raises(ValueError, match="images"):
        model(torch.rand(3, 64, 64), vocab)
    with pytest.raises(ValueError, match="vocabulary"):
        model(torch.rand(1, 3, 64, 64), vocab[0])
