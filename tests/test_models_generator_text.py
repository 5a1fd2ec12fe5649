"""The frozen Mask2Former generator (tiny configs, loading, errors) and the vocabulary encoding."""
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from fisa.models import build_model
from fisa.models.generator import build_generator_architecture, generator_proposals, load_generator
from fisa.models.text import prompt_templates

from test_models_mask_attention import LOSS, model_cfg

TINY_GEN = {"source": "harness", "config": "fisa-tiny-m2f-swin"}


@pytest.mark.parametrize("config", ["fisa-tiny-m2f-swin", "fisa-tiny-m2f-swin-t", "fisa-tiny-m2f-resnet"])
def test_tiny_generators_build_deterministically(config):
    torch.manual_seed(123)
    a = build_generator_architecture({"source": "harness", "config": config}, init_seed=0).eval()
    torch.manual_seed(456)
    b = build_generator_architecture({"source": "harness", "config": config}, init_seed=0).eval()
    img = torch.rand(2, 3, 64, 80) * 255
    with torch.no_grad():
        pa, pb = generator_proposals(a, img, 16), generator_proposals(b, img, 16)
    assert pa.shape == (2, 16, 16, 20)  # padded to 64x96 internally, cropped back to H/4 x W/4
    assert torch.equal(pa, pb)


class _KnownGenerator(torch.nn.Module):
    """A generator with 16 queries of chosen class logits [B, 16, 3 + 1] and constant masks
    (query q's mask logits all equal q), so which proposals are kept can be read off the masks."""

    def __init__(self, class_logits: torch.Tensor):
        super().__init__()
        self.class_logits = class_logits

    def forward(self, pixel_values):
        from types import SimpleNamespace

        b, _, h, w = pixel_values.shape
        masks = torch.arange(16.0)[None, :, None, None].expand(b, 16, -(-h // 4), -(-w // 4))
        return SimpleNamespace(class_queries_logits=self.class_logits, masks_queries_logits=masks)


def test_top_k_proposals_by_objectness():
    """The 5 queries least likely to be "no object" are kept, per image, in query order.
    The others are confident about one class (p = 0.95) but have p(no object) = 0.047; the
    kept ones spread their class mass over 3 classes (max p <= 1/3) with p(no object) <= 0.016:
    ranking by a class probability instead of objectness would keep the others."""
    logits = torch.tensor([5.0, -100.0, -100.0, 2.0]).repeat(2, 16, 1)  # p(no object) = e^2 / (e^5 + e^2)
    for image, queries in ((0, [12, 3, 8, 15, 7]), (1, [0, 1, 2, 9, 10])):
        for q, no_object in zip(queries, [-7.0, -6.0, -5.0, -4.0, -3.0]):
            logits[image, q] = torch.tensor([0.0, 0.0, 0.0, no_object])
    img = torch.rand(2, 3, 64, 64) * 255
    top = generator_proposals(_KnownGenerator(logits), img, 5)
    assert top.shape == (2, 5, 16, 16)
    assert top[0, :, 0, 0].tolist() == [3, 7, 8, 12, 15]
    assert top[1, :, 0, 0].tolist() == [0, 1, 2, 9, 10]
    assert generator_proposals(_KnownGenerator(logits), img, 16)[0, :, 0, 0].tolist() == list(range(16))
    gen = build_generator_architecture(TINY_GEN).eval()
    with pytest.raises(ValueError, match="exceeds the generator's 16 queries"):
        generator_proposals(gen, img[:1], 17)


def test_harness_generator_load_from_cache_and_missing_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"generators/swin_b/config.json.*train_generator"):
        load_generator("swin_b", TINY_GEN, cache_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="convert_generator"):
        load_generator("r50", {"source": "converted", "id": "x"}, cache_dir=str(tmp_path))
    gen = build_generator_architecture(TINY_GEN, init_seed=7).eval()
    gen.save_pretrained(tmp_path / "generators" / "swin_b")
    loaded = load_generator("swin_b", TINY_GEN, cache_dir=str(tmp_path)).eval()
    img = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        torch.testing.assert_close(generator_proposals(loaded, img, 16), generator_proposals(gen, img, 16))
    with pytest.raises(ValueError, match="source: expected hub, harness or converted"):
        load_generator("x", {"source": "ftp"})
    with pytest.raises(ValueError, match="no Mask2Former config 'nope'"):
        build_generator_architecture({"source": "harness", "config": "nope"})


def test_generator_frozen_eval_no_grad_unless_adapted():
    model = build_model(model_cfg(), "fisa").train()
    assert not model.generator.training and model.proposals_cacheable
    props = model.generate_proposals(torch.rand(1, 3, 64, 64) * 255)
    assert not props.requires_grad
    adapted = build_model(model_cfg(), "adapt_mask_generator").train()
    assert adapted.generator.training and not adapted.proposals_cacheable
    assert adapted.generate_proposals(torch.rand(1, 3, 64, 64) * 255).requires_grad


def test_vocabulary_is_template_and_synonym_average_and_cached():
    model = build_model(model_cfg(prompt_templates=["a photo of a {}.", "a {} in the scene"]), "baseline")
    names = [["cat", "kitty"], ["dog"]]
    vocab = model.encode_vocabulary(names)
    assert vocab.shape == (2, 64)
    torch.testing.assert_close(vocab.norm(dim=-1), torch.ones(2))
    # independent reference straight from open_clip
    tok = model.tokenizer
    with torch.no_grad():
        def syn(name):
            e = F.normalize(model.clip.encode_text(tok([f"a photo of a {name}.", f"a {name} in the scene"])), dim=-1)
            return F.normalize(e.mean(0), dim=-1)
        ref0 = F.normalize(syn("cat") + syn("kitty"), dim=-1)
        ref1 = syn("dog")
    torch.testing.assert_close(vocab, torch.stack([ref0, ref1]), atol=1e-5, rtol=1e-5)
    with mock.patch.object(model.clip, "encode_text", side_effect=AssertionError("recomputed")):
        assert model.encode_vocabulary(names) is vocab  # cached per vocabulary
    with pytest.raises(ValueError, match=r"class_names\[1\]"):
        model.encode_vocabulary([["cat"], []])


def test_prompt_templates_data():
    assert len(prompt_templates("fcclip")) == 14
    assert prompt_templates("single") == ["a photo of a {}."]
    with pytest.raises(ValueError, match="unknown template set 'nope'"):
        prompt_templates("nope")
    with pytest.raises(ValueError, match="needs one"):
        prompt_templates(["no placeholder"])


def test_adapt_text_encoder_vocabulary_has_gradient_in_training():
    model = build_model(model_cfg(prompt_templates="single"), "adapt_text_encoder").train()
    v = model.encode_vocabulary([["cat"], ["dog"]])
    assert v.requires_grad
    model.eval()
    assert not model.encode_vocabulary([["cat"], ["dog"]]).requires_grad


def test_frozen_parts_independent_of_training_seed():
    torch.manual_seed(0)
    a = build_model(model_cfg(), "fisa")
    torch.manual_seed(1)
    b = build_model(model_cfg(), "fisa")
    assert torch.equal(a.clip.visual.conv1.weight, b.clip.visual.conv1.weight)
    ga, gb = dict(a.generator.named_parameters()), dict(b.generator.named_parameters())
    assert all(torch.equal(ga[k], gb[k]) for k in ga)
    assert not torch.equal(a.seve["shared"].g_q.weight, b.seve["shared"].g_q.weight)  # new parts follow the seed
    c = build_model({**model_cfg(), "init_seed": 5}, "fisa")
    assert not torch.equal(a.clip.visual.conv1.weight, c.clip.visual.conv1.weight)


def test_bf16_autocast_forward_and_float32_vocabulary():
    model = build_model(model_cfg(prompt_templates="single"), "fisa").train()
    targets = [{"labels": torch.tensor([0]), "masks": torch.rand(1, 64, 64) > 0.5}]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        vocab = model.encode_vocabulary([["cat"], ["dog"]])
        out = model(torch.rand(1, 3, 64, 64) * 255, vocab)
        terms = model.loss(out, targets, **LOSS)
    assert vocab.dtype == torch.float32  # cached beyond the autocast region
    assert torch.isfinite(terms["loss"])
    terms["loss"].backward()
    assert model.clip.visual.transformer.resblocks[0].attn.q_proj.weight.grad is not None
