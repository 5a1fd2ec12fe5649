"""The shape rehearsal (fisa.bench.rehearse) and the compute budget (fisa.bench.budget)."""
from __future__ import annotations

import csv
import json

import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from fisa.bench import budget, rehearse
from fisa.config import load_config, resolve_experiment


@pytest.fixture(scope="module")
def config():
    return load_config()


def test_cpu_sdpa_flops_are_counted():
    """4*B*H*L*S*d for QK^T and AV (forward), 2.5x that for the backward: the formula for SDPA's
    CPU kernel, without which FlopCounterMode counts 0."""
    rehearse.register_cpu_sdpa_flops()
    b, h, n, s, d = 2, 3, 5, 7, 4
    q = torch.randn(b, h, n, d, requires_grad=True)
    k, v = torch.randn(b, h, s, d), torch.randn(b, h, s, d)
    counter = FlopCounterMode(display=False)
    with counter:
        out = F.scaled_dot_product_attention(q, k, v)
    assert counter.get_total_flops() == 4 * b * h * n * s * d
    with counter:
        out.sum().backward()
    assert counter.get_total_flops() == 4 * b * h * n * s * d * 2.5


def test_random_weights_keep_the_pretrained_architecture():
    """`weights: random` with `pretrained: openai` builds OpenAI's QuickGELU ViT-L-14-336 (the tag's
    architecture), on the meta device: no memory, no download."""
    from fisa.models.clip_backbone import create_clip

    cfg = {"model": "ViT-L-14-336", "pretrained": "openai", "image_size": 896}
    with torch.device("meta"):
        clip = create_clip(cfg, weights="random", device="meta")
    act = clip.visual.transformer.resblocks[0].mlp.gelu
    assert isinstance(act, open_clip.transformer.QuickGELU)
    assert next(clip.parameters()).device.type == "meta"
    # ViT-L/14 visual: 24 blocks x 12 W^2 (+ biases, norms) with W=1024, roughly 303M
    n = sum(p.numel() for p in clip.visual.parameters())
    assert 300e6 < n < 310e6


def test_budget_arithmetic(config, tmp_path):
    """GPU-hours = iterations x (global batch / batch per GPU) x step FLOPs / (peak x utilisation)."""
    r = resolve_experiment(config, "fisa_main", "paper")
    row = {"experiment": "fisa_main", "variant": "fisa", "backbone": "vit_l14_336", "generator": "swin_b",
           "params_total": "1000000000", "params_trainable": "1000000", "train_step_flops": "1e13",
           "batch_per_gpu": "4", "test_image_flops": "5e12", "status": "ok", "activation_bytes": "2.4e10",
           "attention_matrix_bytes": "4e9",
           "test_flops_by_dataset": json.dumps({"coco": 4e12, "ade150": 5e12})}
    rows = budget.budget_rows([row], config, "paper")
    b = config["presets"]["paper"]["budget"]
    rate = b["peak_bf16_flops"] * b["utilisation"]
    iters = r["train"]["iterations"]
    assert rows[0]["gpu_hours"] == pytest.approx(iters * r["train"]["batch_size"] / 4 * 1e13 / rate / 3600)
    assert rows[0]["projected_fps"] == pytest.approx(rate / 5e12)  # ADE-150's image, as Table 2
    assert rows[0]["train_memory_gb"] == pytest.approx((4e9 + 12e6 + 1e10) / 1e9)
    assert rows[0]["fits_40gb"] == "yes" and rows[0]["fits_80gb"] == "yes"
    assert rows[-1]["experiment"] == "total" and rows[-1]["gpu_hours"] == rows[0]["gpu_hours"]
    with pytest.raises(ValueError, match="fisa_main"):
        budget.budget_rows([{**row, "status": "error: boom"}], config, "paper")


def test_a_failing_experiment_names_itself(config, monkeypatch):
    """A shape error fails that row with the error, the others still run."""
    def boom(model, resolved, batch):
        if resolved["experiment"] == "adapter_1":
            raise RuntimeError("shape mismatch [4, 3] vs [4, 5]")
        return {"train_step_flops": 1, "activation_bytes": 0, "attention_matrix_bytes": 0, "train_classes": 133,
                "crop_size": 1024,
                "batch_per_gpu": batch}

    monkeypatch.setattr(rehearse, "rehearse_training", boom)
    monkeypatch.setattr(rehearse, "rehearse_test_image", lambda m, r, ds, cache: {"flops": 2, "vocabulary_flops": 0,
                                                                           "classes": 1})
    rows = rehearse.rehearse_shapes(config, "paper", ["adapter_0", "adapter_1"])
    assert [r["status"] for r in rows] == ["ok", "error: RuntimeError: shape mismatch [4, 3] vs [4, 5]"]
    assert rows[0]["batch_per_gpu"] == 16 // 4  # train.batch_size / resources.train.gpus


@pytest.mark.slow
def test_paper_preset_shape_rehearsal(config, tmp_path):
    """Every non-optional paper experiment: a row, status ok, FLOPs and parameters that agree with
    independent counts."""
    out = tmp_path / "F.csv"
    assert rehearse.main(["--preset", "paper", "--mode", "shapes", "--output", str(out)]) == 0
    rows = {r["experiment"]: r for r in csv.DictReader(out.open())}
    expected = [n for n, e in config["experiments"].items() if not e.get("optional", False)]
    assert sorted(rows) == sorted(expected)
    assert {r["status"] for r in rows.values()} == {"ok"}
    fisa, base = rows["fisa"], rows["baseline"]
    # the baseline trains nothing and is never trained; FISA trains a small part
    assert int(base["train_step_flops"]) == 0
    assert 0 < int(fisa["params_trainable"]) < int(fisa["params_total"]) / 5
    # a test image through ViT-L/14 at 896 px: at least 2 x (24 blocks x 12 W^2) x 4097 tokens
    assert int(fisa["test_image_flops"]) > 2 * 24 * 12 * 1024 ** 2 * 4097
    # one training step at batch 4 costs more than 3x (fwd + bwd) four test-image forwards of CLIP alone
    assert int(fisa["train_step_flops"]) > 4 * 2 * 24 * 12 * 1024 ** 2 * 4097
    # EVA01-g is the largest backbone, ViT-B/16 the smallest
    assert int(rows["clip_eva01_g14"]["params_total"]) > int(fisa["params_total"]) > int(rows["clip_vit_b16"]["params_total"])
