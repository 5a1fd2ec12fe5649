"""SIMO and the variants: exactly the expected parameters train; k/v stay bit-identical under AdamW."""
import open_clip
import pytest
import torch

from fisa.models import VARIANTS, build_model
from fisa.models.clip_backbone import register_model_configs
from fisa.engine.loop import load_trainable_state_dict, trainable_state_dict
from fisa.models.parameters import param_groups, trainable_by_group, trainable_parameters

from test_models_mask_attention import LOSS, model_cfg

DEPTH, WIDTH = 4, 64  # fisa-tiny-vit-l


def names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def expected_trainable(model, variant):
    """Independent statement of SPEC Table 3, by parameter name."""
    all_names = [n for n, _ in model.named_parameters()]
    new = {n for n in all_names if n.startswith(("seve.", "distribution_adapter.")) or n == "no_object_embedding"}
    q = {f"clip.visual.transformer.resblocks.{i}.attn.q_proj.{k}" for i in range(DEPTH) for k in ("weight", "bias")}
    visual = {n for n in all_names if n.startswith("clip.visual.")}
    text = {n for n in all_names if n.startswith("clip.") and not n.startswith("clip.visual.")} - {"clip.logit_scale"}
    gen = {n for n in all_names if n.startswith("generator.")}
    lora = {n for n in all_names if "lora_" in n}
    return {"baseline": set(), "oracle_generator": set(), "oracle_classifier": set(),
            "seve": new, "seve_full_finetune": new | visual, "fisa": new | q, "lora": new | lora,
            "adapt_text_encoder": new | q | text, "adapt_mask_generator": new | q | gen}[variant]


@pytest.mark.parametrize("variant", VARIANTS)
def test_trainable_set_per_variant(variant):
    model = build_model(model_cfg(lora_rank=2), variant)
    assert names(model) == expected_trainable(model, variant)
    groups = trainable_by_group(model)
    assert sum(groups.values()) == trainable_parameters(model)
    if variant == "fisa":
        assert groups["query_projection"] == DEPTH * (WIDTH * WIDTH + WIDTH)
        assert groups["seve"] > 0 and groups["distribution_adapter"] > 0
        assert groups["clip_visual"] == groups["lora"] == groups["text_encoder"] == groups["mask_generator"] == 0
    if variant in ("baseline", "oracle_generator", "oracle_classifier"):
        assert len(model.seve) == 0 and model.distribution_adapter is None


def test_simo_kv_rows_bit_identical_q_rows_move():
    torch.manual_seed(0)
    model = build_model(model_cfg(), "fisa")
    register_model_configs()
    torch.manual_seed(0)
    fused = open_clip.create_model("fisa-tiny-vit-l", pretrained=None)  # same init seed 0 as build_model
    blocks = model.clip.visual.transformer.resblocks
    opt = torch.optim.AdamW(param_groups(model, lr=1e-2, weight_decay=0.05, backbone_lr_multiplier=0.1))
    vocab = model.encode_vocabulary([["cat"], ["dog"], ["sky"]])
    targets = [{"labels": torch.tensor([0, 2]), "masks": torch.rand(2, 64, 64) > 0.5}]
    model.train()
    for _ in range(3):
        out = model(torch.rand(1, 3, 64, 64) * 255, vocab)
        loss = model.loss(out, targets, **LOSS)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    for blk, ref in zip(blocks, fused.visual.transformer.resblocks):
        w, b = ref.attn.in_proj_weight, ref.attn.in_proj_bias
        after_w = torch.cat([blk.attn.q_proj.weight, blk.attn.k_proj.weight, blk.attn.v_proj.weight])
        after_b = torch.cat([blk.attn.q_proj.bias, blk.attn.k_proj.bias, blk.attn.v_proj.bias])
        assert torch.equal(after_w[WIDTH:], w[WIDTH:]) and torch.equal(after_b[WIDTH:], b[WIDTH:])  # k, v rows
        assert not torch.equal(after_w[:WIDTH], w[:WIDTH])  # q rows moved
        assert torch.equal(blk.attn.out_proj.weight, ref.attn.out_proj.weight)
        assert torch.equal(blk.mlp.c_fc.weight, ref.mlp.c_fc.weight)
    # frozen parameters: no gradient, no optimizer state
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in opt.state} == trainable
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_param_groups_learning_rates_and_decay():
    model = build_model(model_cfg(), "fisa")
    groups = {g["name"]: g for g in param_groups(model, lr=1e-4, weight_decay=0.05, backbone_lr_multiplier=0.1)}
    assert groups["query_projection/weight"]["lr"] == pytest.approx(1e-5)
    assert groups["seve/weight"]["lr"] == pytest.approx(1e-4)
    assert groups["query_projection/bias"]["weight_decay"] == 0.05  # detectron2: biases decay like weights
    assert groups["seve/weight"]["weight_decay"] == 0.05
    n = sum(p.numel() for g in groups.values() for p in g["params"])
    assert n == trainable_parameters(model)


@pytest.mark.parametrize("rank", [1, 2, 4])
def test_lora_parameter_count_grows_with_rank(rank):
    model = build_model(model_cfg(lora_rank=rank), "lora")
    # A: r x W and B: W x r on q, k, v, out of every block (W -> W projections)
    assert trainable_by_group(model)["lora"] == DEPTH * 4 * rank * (WIDTH + WIDTH)


def test_lora_starts_as_identity_and_rejects_bad_rank():
    torch.manual_seed(0)
    base = build_model(model_cfg(), "seve")
    torch.manual_seed(0)
    lora = build_model(model_cfg(lora_rank=2), "lora")
    vocab = base.encode_vocabulary([["a"], ["b"]])
    img = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        torch.testing.assert_close(lora(img, vocab)["class_logits"], base(img, vocab)["class_logits"])
    with pytest.raises(ValueError, match="lora_rank"):
        build_model(model_cfg(lora_rank=None), "lora")


def test_trainable_state_dict_roundtrip():
    torch.manual_seed(0)
    a = build_model(model_cfg(), "fisa")
    torch.manual_seed(1)
    b = build_model(model_cfg(), "fisa")
    # the engine's checkpoint content: the trainable parameters and every buffer, nothing frozen
    state = trainable_state_dict(a)
    trainable = {n for n, p in a.named_parameters() if p.requires_grad}
    assert set(state) == trainable | (set(a.state_dict()) - {n for n, _ in a.named_parameters()})
    assert sum(state[n].numel() for n in trainable) == trainable_parameters(a)
    load_trainable_state_dict(b, state)
    loaded = b.state_dict()
    for n, t in state.items():
        assert torch.equal(loaded[n], t)
    with pytest.raises(KeyError, match="missing"):
        load_trainable_state_dict(b, {k: v for k, v in state.items() if not k.startswith("seve.")}, source="x.pt")


def test_unknown_variant_is_rejected():
    with pytest.raises(ValueError, match="unknown 'simo'"):
        build_model(model_cfg(), "simo")


@pytest.mark.parametrize("key", ["num_proposals", "adapter_layers", "adapter_channels", "adapter_kernel_size",
                                 "lora_rank", "logit_scale", "init_seed", "weights"])
def test_factory_has_no_hidden_defaults(key):
    """Every model key comes from the config: a section without one fails naming it, instead of a
    default in code that no run records."""
    cfg = model_cfg()
    del cfg[key]
    with pytest.raises(KeyError, match=rf"missing keys \['{key}'\]"):
        build_model(cfg, "fisa")


def test_preset_model_config_is_the_presets_complete_section():
    from fisa.config import load_config
    from fisa.models.build import MODEL_KEYS, preset_model_config

    paper = load_config()["presets"]["paper"]
    cfg = preset_model_config("paper", num_proposals=7)
    assert set(cfg) == set(MODEL_KEYS)
    assert cfg["num_proposals"] == 7 and cfg["adapter_layers"] == paper["defaults"]["model"]["adapter_layers"]
    assert cfg["clip"] == paper["backbones"][paper["defaults"]["model"]["backbone"]]
    with pytest.raises(KeyError, match="unknown keys \\['adapter_depth'\\]"):
        preset_model_config("paper", adapter_depth=3)
