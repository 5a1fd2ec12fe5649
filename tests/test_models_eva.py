"""EVA towers (open_clip TimmModel around timm's Eva, EVA01 layout) with a tiny random config."""
import copy

import open_clip
import pytest
import torch

from fisa.models import build_model
from fisa.models.clip_backbone import create_clip, register_model_configs
from fisa.models.eva_backbone import EvaSplitAttention, split_eva_attention
from fisa.models.mask_attention import encode_with_mask_tokens
from fisa.models.parameters import param_groups, trainable_by_group

from test_models_mask_attention import LOSS, PATCH_MASK, model_cfg

EVA = {"model": "fisa-tiny-eva", "pretrained": None, "image_size": 64}


@pytest.fixture(scope="module")
def eva_pair():
    register_model_configs()
    torch.manual_seed(0)
    ref = open_clip.create_model("fisa-tiny-eva", pretrained=None).eval()
    with torch.no_grad():  # non-zero q/v biases, so the split must carry them
        for blk in ref.visual.trunk.blocks:
            blk.attn.q_bias.normal_(std=0.1)
            blk.attn.v_bias.normal_(std=0.1)
    ours = copy.deepcopy(ref)
    split_eva_attention(ours.visual)
    return ours, ref


def test_eva_split_and_mask_tokens_keep_clip_path(eva_pair):
    ours, ref = eva_pair
    assert all(isinstance(b.attn, EvaSplitAttention) for b in ours.visual.trunk.blocks)
    torch.manual_seed(1)
    pixels = torch.randn(2, 3, 64, 64)
    masks = torch.full((2, 3, 16, 16), -3.0)
    masks[:, 0] = 3.0  # whole image
    masks[:, 1, :5, :5] = 3.0
    with torch.no_grad():
        enc = encode_with_mask_tokens(ours.visual, pixels, masks, PATCH_MASK)
        ref_cls = ref.visual(pixels)
        ref_tokens = ref.visual.trunk.forward_features(pixels)
    torch.testing.assert_close(enc["cls_embedding"], ref_cls, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.visual.trunk.norm(enc["image_tokens"]), ref_tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(enc["region_embeddings"][:, 0], ref_cls, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(enc["region_embeddings"]).all()


def test_eva_simo_kv_bit_identical_and_groups():
    torch.manual_seed(0)
    model = build_model(model_cfg(clip=dict(EVA)), "fisa")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    groups = trainable_by_group(model)
    assert groups["query_projection"] == 3 * (64 * 64 + 64)
    opt = torch.optim.AdamW(param_groups(model, lr=1e-2, weight_decay=0.05, backbone_lr_multiplier=0.1))
    vocab = model.encode_vocabulary([["a"], ["b"]])
    model.train()
    for _ in range(2):
        out = model(torch.rand(1, 3, 64, 64) * 255, vocab)
        loss = model.loss(out, [{"labels": torch.tensor([1]), "masks": torch.rand(1, 64, 64) > 0.5}], **LOSS)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = dict(model.named_parameters())
    for n, t in before.items():
        if ".attn.k_proj." in n or ".attn.v_proj." in n or ".attn.out_proj." in n:
            assert torch.equal(after[n], t), n
    assert not torch.equal(after["clip.visual.trunk.blocks.0.attn.q_proj.weight"],
                           before["clip.visual.trunk.blocks.0.attn.q_proj.weight"])


def test_eva_lora_and_other_timm_towers():
    model = build_model(model_cfg(clip=dict(EVA), lora_rank=2), "lora")
    assert trainable_by_group(model)["lora"] == 3 * 4 * 2 * (64 + 64)
    with pytest.raises(NotImplementedError, match="convnext_base"):
        create_clip({"model": "convnext_base", "pretrained": None})
