"""Mask tokens on open_clip's VisionTransformer: CLIP's own path unchanged, Eq. 5 masking, no NaN."""
import json

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from fisa.models import build_model, preset_model_config
from fisa.models.clip_backbone import SplitAttention, create_clip, interpolated_position_embedding, register_model_configs
from fisa.models.mask_attention import encode_with_mask_tokens, mask_token_block, patch_attention_mask

TINY = {"model": "fisa-tiny-vit-l", "pretrained": None, "image_size": 64}
PATCH_MASK = {"rule": "maskclip", "threshold": 0.5}
# FisaModel.loss's arguments as the engine passes them from `train` (the dense criterion: no sampling)
LOSS = {"weights": {"ce": 2.0, "dice": 5.0, "bce": 5.0}, "no_object_weight": 0.1, "criterion": {"type": "dense"}}


def model_cfg(**over):
    """The small preset's complete model section (config.yaml), on the tiny random-weight CLIP and
    harness generator, with `over` replacing top-level keys."""
    cfg = {"num_proposals": 16, "adapter_layers": 2, "lora_rank": None,
           "seve": {"layers": "all", "shared": True, "qk_dim": 12, "residual": True},
           "patch_mask": dict(PATCH_MASK), "prompt_templates": "single",
           "clip": dict(TINY), "generator_config": {"source": "harness", "config": "fisa-tiny-m2f-swin"},
           "synonyms": "average", "void": "learned"}
    return preset_model_config("small", **{**cfg, **over})


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
        enc = encode_with_mask_tokens(ours.visual, pixels, masks, PATCH_MASK)
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
        enc = encode_with_mask_tokens(ours.visual, pixels, masks, PATCH_MASK)
    torch.testing.assert_close(enc["region_embeddings"][:, 0], enc["cls_embedding"], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(enc["region_embeddings"]).all()
    assert not torch.allclose(enc["region_embeddings"][:, 2], enc["cls_embedding"], atol=1e-3)


def test_patch_attention_mask_eq5():
    masks = torch.full((1, 2, 16, 16), -1.0)
    masks[0, 0, 5, 9] = 1.0  # one pixel -> the patch holding it (grid 4x4, 4x4 pixels per patch)
    keep = patch_attention_mask(masks, (4, 4), (4, 4), PATCH_MASK)
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
        a = encode_with_mask_tokens(clip.visual, img, mask, PATCH_MASK)["region_embeddings"]
        b = encode_with_mask_tokens(clip.visual, img2, mask, PATCH_MASK)["region_embeddings"]
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


def reference_bilinear(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a [h, w] array to `size` with half-pixel centres (align_corners=False) and
    edge clamping, written out: output pixel i reads source position (i + 0.5) * h / H - 0.5."""
    h, w = a.shape

    def axis(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, wy = axis(h, size[0])
    x0, x1, wx = axis(w, size[1])
    top = a[y0][:, x0] * (1 - wx) + a[y0][:, x1] * wx
    bottom = a[y1][:, x0] * (1 - wx) + a[y1][:, x1] * wx
    return top * (1 - wy[:, None]) + bottom * wy[:, None]


def reference_patch_mask(logits: np.ndarray, grid, patch, threshold=0.5) -> np.ndarray:
    """MaskCLIP's rule from its description: upsample the mask logits to the CLIP input
    (grid * patch pixels), keep pixels with sigmoid >= threshold, and let a patch through when any of
    its pixels is kept. logits [Q, h, w] -> bool [Q, 1 + gh*gw] ([CLS] first, always True)."""
    gh, gw = grid
    out = np.zeros((logits.shape[0], 1 + gh * gw), dtype=bool)
    out[:, 0] = True
    for qi, lg in enumerate(logits.astype(np.float64)):
        up = reference_bilinear(lg, (gh * patch, gw * patch))
        pixels = 1.0 / (1.0 + np.exp(-up)) >= threshold
        for r in range(gh):
            for c in range(gw):
                out[qi, 1 + r * gw + c] = pixels[r * patch:(r + 1) * patch, c * patch:(c + 1) * patch].any()
    return out


def _blob_logits(q, h, w, seed):
    """Smooth-ish random masks: a few positive ellipses on a negative background, plus a region of
    logits exactly 0 (sigmoid exactly 0.5: inside by MaskCLIP's >= 0.5)."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    out = np.full((q, h, w), -3.0)
    for qi in range(q):
        for _ in range(2):
            cy, cx = g.uniform(0, h), g.uniform(0, w)
            ry, rx = g.uniform(h / 30, h / 6), g.uniform(w / 30, w / 6)
            out[qi] += 6.0 * (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1)
    out[0, h // 2:h // 2 + 3, w // 3:w // 3 + 3] = 0.0  # a plateau at the threshold itself
    return out


def test_patch_mask_maskclip_rule_at_a_non_integer_ratio():
    # 200x267 logits -> 64x64 patches of 14 px (896 px CLIP input): 3.125 x 4.17 logits per patch
    logits = _blob_logits(4, 200, 267, seed=0)
    logits[1] = -3.0  # an empty mask
    keep = patch_attention_mask(torch.from_numpy(logits).float()[None], (64, 64), (14, 14), PATCH_MASK)
    ref = reference_patch_mask(logits, (64, 64), 14)
    assert keep.shape == (1, 4, 1 + 64 * 64)
    assert np.array_equal(keep[0].numpy(), ref)
    assert ref[1, 1:].sum() == 0 and ref[0, 1:].sum() > 0
    # the plateau of exact zeros alone is inside (sigmoid 0.5 >= 0.5)
    flat = np.full((1, 200, 267), -3.0)
    flat[0, 100:103, 89:92] = 0.0
    keep_flat = patch_attention_mask(torch.from_numpy(flat).float()[None], (64, 64), (14, 14), PATCH_MASK)
    assert keep_flat[0, 0, 1:].any() and np.array_equal(keep_flat[0].numpy(), reference_patch_mask(flat, (64, 64), 14))


def test_patch_mask_rules_differ_at_non_integer_ratios_and_threshold_is_a_probability():
    # adaptive max pooling (the harness's earlier rule) dilates: its bins overlap when 200/64 is not an integer
    logits = torch.from_numpy(_blob_logits(4, 200, 267, seed=1)).float()[None]
    maskclip = patch_attention_mask(logits, (64, 64), (14, 14), PATCH_MASK)
    adaptive = patch_attention_mask(logits, (64, 64), (14, 14), {"rule": "adaptive_max", "threshold": 0.5})
    assert (adaptive | maskclip).sum() > maskclip.sum()
    # its own rule: bin i spans floor(i*h/g) .. ceil((i+1)*h/g)
    lg = logits[0, 2].numpy()
    rows = [(int(np.floor(i * 200 / 64)), int(np.ceil((i + 1) * 200 / 64))) for i in range(64)]
    cols = [(int(np.floor(j * 267 / 64)), int(np.ceil((j + 1) * 267 / 64))) for j in range(64)]
    ref = np.array([[lg[r0:r1, c0:c1].max() >= 0 for (c0, c1) in cols] for (r0, r1) in rows])
    assert np.array_equal(adaptive[0, 2, 1:].numpy(), ref.ravel())
    # a higher threshold keeps fewer patches; exactly the reference at that threshold
    strict = patch_attention_mask(logits, (64, 64), (14, 14), {"rule": "maskclip", "threshold": 0.9})
    assert np.array_equal(strict[0].numpy(), reference_patch_mask(logits[0].numpy(), (64, 64), 14, 0.9))
    assert strict.sum() < maskclip.sum()
    with pytest.raises(ValueError, match="model.patch_mask.rule"):
        patch_attention_mask(logits, (64, 64), (14, 14), {"rule": "nearest", "threshold": 0.5})
    with pytest.raises(ValueError, match="model.patch_mask.threshold"):
        patch_attention_mask(logits, (64, 64), (14, 14), {"rule": "maskclip", "threshold": 0.0})


def test_patch_mask_in_a_padded_batch():
    """Image 0 fills the 120x100 canvas; image 1 (72x60 logits) is zero-padded at the bottom/right,
    where the generator's logits are negative. Each image's mask is its own, whatever the batch."""
    canvas = _blob_logits(3, 120, 100, seed=2)
    small = _blob_logits(3, 72, 60, seed=3)
    padded = np.full((3, 120, 100), -4.0)
    padded[:, :72, :60] = small
    batch = torch.from_numpy(np.stack([canvas, padded])).float()
    grid, patch = (15, 12), 8  # 120 x 96 px CLIP input: 8x8.33 logits per patch
    keep = patch_attention_mask(batch, grid, (patch, patch), PATCH_MASK)
    for b, arr in enumerate((canvas, padded)):
        assert np.array_equal(keep[b].numpy(), reference_patch_mask(arr, grid, patch))
        alone = patch_attention_mask(batch[b:b + 1], grid, (patch, patch), PATCH_MASK)
        assert torch.equal(alone[0], keep[b])
    # patches wholly inside image 1's padding are never attended (its masks are 72/120 x 60/100 of the frame)
    kp = keep[1, :, 1:].view(3, 15, 12)
    assert not kp[:, 10:, :].any() and not kp[:, :, 8:].any()
    assert kp[:, :9, :7].any()


def test_gradient_checkpointing_gives_the_same_gradients_and_keeps_fewer_activations():
    """`train.gradient_checkpointing`: each CLIP block recomputed in the backward pass. Gradients
    of every trainable parameter equal the plain pass's; autograd keeps less (saved-tensor bytes)."""
    torch.manual_seed(0)
    model = build_model(model_cfg(), "fisa").train()
    vocab = model.encode_vocabulary([["cat"], ["dog"], ["tree"]])
    images = torch.rand(2, 3, 64, 64) * 255

    def grads_and_saved(checkpointing):
        model.zero_grad(set_to_none=True)
        model.gradient_checkpointing = checkpointing
        saved = []

        def pack(t):
            saved.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(images, vocab)
            value = out["class_logits"].square().mean() + out["region_embeddings"].sum()
        value.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, sum(saved)

    plain, plain_bytes = grads_and_saved(False)
    ckpt, ckpt_bytes = grads_and_saved(True)
    assert plain.keys() == ckpt.keys() and any("seve" in n for n in plain) and any("q_proj" in n for n in plain)
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)
    assert ckpt_bytes < 0.6 * plain_bytes, (ckpt_bytes, plain_bytes)
    # evaluation (no gradients) never checkpoints: the same outputs either way
    model.eval()
    with torch.no_grad():
        model.gradient_checkpointing = True
        a = model(images, vocab)["class_logits"]
        model.gradient_checkpointing = False
        b = model(images, vocab)["class_logits"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
