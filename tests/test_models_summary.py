"""`python -m fisa.models.summary` and a real-size ViT-L-14-336 build (random weights)."""
import json

import pytest
import torch

from fisa.models.summary import main, summary_config


def test_summary_json_tiny(capsys):
    assert main(["--clip", "fisa-tiny-vit-l", "--variant", "fisa", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    groups = out["trainable_by_group"]
    assert groups["query_projection"] == 4 * (64 * 64 + 64)
    # the paper preset's SEVE: one shared g for all blocks, q/k 192 wide: g_q W->192, g_k D->192, g_v D->W
    assert out["seve"] == {"layers": "all", "shared": True, "qk_dim": 192, "residual": True}
    assert groups["seve"] == 2 * (64 * 192 + 192) + (64 * 64 + 64)
    assert out["trainable_parameters"] == sum(groups.values())
    assert out["total_parameters"] > out["trainable_parameters"]


def test_summary_seve_designs_from_flags_and_presets(capsys):
    # the earlier design: SEVE in the last half (2 of 4 blocks), one full-width g per block
    assert main(["--clip", "fisa-tiny-vit-l", "--variant", "fisa", "--json", "--seve-layers", "last_half",
                 "--no-seve-shared", "--seve-qk-dim", "full"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["trainable_by_group"]["seve"] == 2 * ((64 * 64 + 64) + 2 * (64 * 64 + 64))
    assert main(["--clip", "fisa-tiny-vit-l", "--variant", "fisa", "--json", "--preset", "small"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seve"]["qk_dim"] == 12 and out["trainable_by_group"]["seve"] == 2 * (64 * 12 + 12) + 64 * 64 + 64
    assert main(["--clip", "fisa-tiny-vit-l", "--variant", "fisa", "--preset", "huge"]) == 2
    assert "--preset" in capsys.readouterr().err


def test_summary_errors(capsys):
    with pytest.raises(SystemExit):
        main(["--clip", "fisa-tiny-vit-l", "--variant", "lora"])
    assert "needs --lora-rank" in capsys.readouterr().err
    assert main(["--clip", "No-Such-CLIP", "--variant", "fisa"]) == 2
    assert "unknown open_clip model 'No-Such-CLIP'" in capsys.readouterr().err


@pytest.mark.slow
def test_vit_l_14_336_fisa_forward_at_336px():
    torch.manual_seed(0)
    cfg = summary_config("ViT-L-14-336", num_proposals=16)
    cfg["clip"]["image_size"] = 336
    from fisa.models import build_model
    from fisa.models.parameters import trainable_by_group

    model = build_model(cfg, "fisa")
    groups = trainable_by_group(model)
    assert groups["query_projection"] == 24 * (1024 * 1024 + 1024) == 25_190_400
    # the paper's "26M" (line 138): shared SEVE g, q/k 192 wide (docs/models.md)
    assert groups["seve"] == (1024 * 192 + 192) + (768 * 192 + 192) + (768 * 1024 + 1024) == 1_131_904
    assert 25_500_000 <= sum(groups.values()) == 26_323_225 <= 26_500_000
    vocab = model.encode_vocabulary([["cat"], ["dog"], ["sky"]])
    masks = torch.full((1, 4, 84, 84), -1.0)
    masks[0, 0] = 1.0
    masks[0, 1, :40, :40] = 1.0
    masks[0, 2, 40:, 20:] = 1.0  # mask 3 stays empty
    with torch.no_grad():
        out = model(torch.rand(1, 3, 336, 336) * 255, vocab, proposals=masks)
    assert out["region_embeddings"].shape == (1, 4, 768)
    assert out["class_logits"].shape == (1, 4, 4)
    assert torch.isfinite(out["class_logits"]).all()


def test_unsupported_timm_towers_fail_early_with_a_clear_error(capsys):
    # a timm ConvNeXt tower: refused before it is built
    assert main(["--clip", "convnext_base", "--variant", "fisa"]) == 2
    err = capsys.readouterr().err
    assert "convnext_base" in err and "native VisionTransformer" in err
