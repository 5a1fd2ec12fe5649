"""detectron2 -> transformers conversion of the R50 Mask2Former, on a random state dict of the
original's shapes (the layout below is written from detectron2's naming, independently of the converter)."""
import pickle

import numpy as np
import pytest
import torch

from fisa.models.convert_d2_mask2former import convert_file, convert_state_dict, main, r50_config


def d2_r50_state_dict(seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"backbone.stem.conv1.weight": (64, 3, 7, 7)}

    def bn(prefix, c):
        for k in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{k}"] = (c,)

    bn("backbone.stem.conv1.norm", 64)
    cin = 64
    for stage, (bott, cout, depth) in enumerate([(64, 256, 3), (128, 512, 4), (256, 1024, 6), (512, 2048, 3)]):
        for b in range(depth):
            p = f"backbone.res{stage + 2}.{b}"
            if b == 0:
                shapes[f"{p}.shortcut.weight"] = (cout, cin, 1, 1)
                bn(f"{p}.shortcut.norm", cout)
            shapes[f"{p}.conv1.weight"] = (bott, cin if b == 0 else cout, 1, 1)
            shapes[f"{p}.conv2.weight"] = (bott, bott, 3, 3)
            shapes[f"{p}.conv3.weight"] = (cout, bott, 1, 1)
            for j, c in ((1, bott), (2, bott), (3, cout)):
                bn(f"{p}.conv{j}.norm", c)
        cin = cout
    pd = "sem_seg_head.pixel_decoder"
    for i, c in enumerate([2048, 1024, 512]):  # res5, res4, res3
        shapes.update({f"{pd}.input_proj.{i}.0.weight": (256, c, 1, 1), f"{pd}.input_proj.{i}.0.bias": (256,),
                       f"{pd}.input_proj.{i}.1.weight": (256,), f"{pd}.input_proj.{i}.1.bias": (256,)})
    shapes[f"{pd}.transformer.level_embed"] = (3, 256)
    for i in range(6):
        p = f"{pd}.transformer.encoder.layers.{i}"
        for name, out in (("sampling_offsets", 192), ("attention_weights", 96), ("value_proj", 256), ("output_proj", 256)):
            shapes[f"{p}.self_attn.{name}.weight"] = (out, 256)
            shapes[f"{p}.self_attn.{name}.bias"] = (out,)
        shapes.update({f"{p}.norm1.weight": (256,), f"{p}.norm1.bias": (256,), f"{p}.linear1.weight": (1024, 256),
                       f"{p}.linear1.bias": (1024,), f"{p}.linear2.weight": (256, 1024), f"{p}.linear2.bias": (256,),
                       f"{p}.norm2.weight": (256,), f"{p}.norm2.bias": (256,)})
    shapes.update({f"{pd}.mask_features.weight": (256, 256, 1, 1), f"{pd}.mask_features.bias": (256,),
                   f"{pd}.adapter_1.weight": (256, 256, 1, 1), f"{pd}.adapter_1.norm.weight": (256,),
                   f"{pd}.adapter_1.norm.bias": (256,), f"{pd}.layer_1.weight": (256, 256, 3, 3),
                   f"{pd}.layer_1.norm.weight": (256,), f"{pd}.layer_1.norm.bias": (256,)})
    pr = "sem_seg_head.predictor"
    for i in range(9):
        for kind, attn in (("self_attention", "self_attn"), ("cross_attention", "multihead_attn")):
            p = f"{pr}.transformer_{kind}_layers.{i}"
            shapes.update({f"{p}.{attn}.in_proj_weight": (768, 256), f"{p}.{attn}.in_proj_bias": (768,),
                           f"{p}.{attn}.out_proj.weight": (256, 256), f"{p}.{attn}.out_proj.bias": (256,),
                           f"{p}.norm.weight": (256,), f"{p}.norm.bias": (256,)})
        p = f"{pr}.transformer_ffn_layers.{i}"
        shapes.update({f"{p}.linear1.weight": (2048, 256), f"{p}.linear1.bias": (2048,),
                       f"{p}.linear2.weight": (256, 2048), f"{p}.linear2.bias": (256,),
                       f"{p}.norm.weight": (256,), f"{p}.norm.bias": (256,)})
    shapes.update({f"{pr}.decoder_norm.weight": (256,), f"{pr}.decoder_norm.bias": (256,),
                   f"{pr}.query_feat.weight": (100, 256), f"{pr}.query_embed.weight": (100, 256),
                   f"{pr}.level_embed.weight": (3, 256), f"{pr}.class_embed.weight": (134, 256),
                   f"{pr}.class_embed.bias": (134,), "criterion.empty_weight": (134,),
                   "pixel_mean": (3, 1, 1), "pixel_std": (3, 1, 1)})
    for i in range(3):
        shapes[f"{pr}.mask_embed.layers.{i}.weight"] = (256, 256)
        shapes[f"{pr}.mask_embed.layers.{i}.bias"] = (256,)
    sd = {k: (rng.standard_normal(s) * 0.02).astype(np.float32) for k, s in shapes.items()}
    for k in sd:  # keep BN variances positive
        if k.endswith("running_var"):
            sd[k] = np.abs(sd[k]) + 1.0
    return sd


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    d2 = d2_r50_state_dict()
    pkl = tmp_path_factory.mktemp("d2") / "model_final.pkl"
    with open(pkl, "wb") as fh:
        pickle.dump({"model": d2, "__author__": "test"}, fh)
    out = tmp_path_factory.mktemp("hf") / "r50"
    assert main(["--pkl", str(pkl), "--out", str(out)]) == 0
    return d2, out


def test_conversion_places_tensors(converted):
    from transformers import Mask2FormerForUniversalSegmentation

    d2, out = converted
    model = Mask2FormerForUniversalSegmentation.from_pretrained(str(out)).eval()
    sd = model.state_dict()
    fused = d2["sem_seg_head.predictor.transformer_self_attention_layers.3.self_attn.in_proj_weight"]
    layer = "model.transformer_module.decoder.layers.3.self_attn"
    assert np.array_equal(sd[f"{layer}.q_proj.weight"].numpy(), fused[:256])
    assert np.array_equal(sd[f"{layer}.v_proj.weight"].numpy(), fused[512:])
    assert np.array_equal(sd["model.pixel_level_module.encoder.encoder.stages.2.layers.1.layer.1.convolution.weight"].numpy(),
                          d2["backbone.res4.1.conv2.weight"])
    assert np.array_equal(sd["model.pixel_level_module.decoder.input_projections.0.0.weight"].numpy(),
                          d2["sem_seg_head.pixel_decoder.input_proj.0.0.weight"])
    assert np.array_equal(sd["class_predictor.weight"].numpy(), d2["sem_seg_head.predictor.class_embed.weight"])
    with torch.no_grad():
        masks = model(pixel_values=torch.randn(1, 3, 64, 64)).masks_queries_logits
    assert masks.shape == (1, 100, 16, 16) and torch.isfinite(masks).all()


def test_conversion_errors_name_the_key():
    config = r50_config()
    d2 = d2_r50_state_dict()
    from transformers import Mask2FormerForUniversalSegmentation

    with torch.device("meta"):
        target = Mask2FormerForUniversalSegmentation(config).state_dict()
    bad = dict(d2)
    del bad["backbone.res3.2.conv3.weight"]
    with pytest.raises(KeyError, match="backbone.res3.2.conv3.weight"):
        convert_state_dict(bad, config, target)
    bad = dict(d2, **{"sem_seg_head.predictor.query_feat.weight": np.zeros((50, 256), np.float32)})
    with pytest.raises(ValueError, match=r"query_feat.weight has shape \(50, 256\)"):
        convert_state_dict(bad, config, target)
    bad = dict(d2, extra_head=np.zeros(3, np.float32))
    with pytest.raises(KeyError, match="not used.*extra_head"):
        convert_state_dict(bad, config, target)
