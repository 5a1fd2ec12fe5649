"""The small preset's harness-pretrained tiny CLIP (fisa.engine.pretrain_clip) and its loading."""
from __future__ import annotations

import json
import os

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from fisa.engine.pretrain_clip import fuse_split_state_dict, pretrain_clip, pretraining_classes, render_class_image
from fisa.models.clip_backbone import create_clip, harness_clip_path, register_model_configs
from fisa.models.text import encode_class_names, get_tokenizer, prompt_templates

ENTRY = {"model": "fisa-tiny-vit-b", "pretrained": None, "image_size": 64, "source": "harness"}


def _mean_cos(emb: torch.Tensor) -> float:
    c = emb.shape[0]
    return float(sum(float(emb[i] @ emb[j]) for i in range(c) for j in range(c) if i != j) / (c * (c - 1)))


def _ade_text(clip) -> torch.Tensor:
    from fisa.data.registry import get_meta

    return encode_class_names(clip, get_tokenizer(ENTRY["model"]), get_meta("ade150").classes,
                              prompt_templates("fcclip"))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    # both cores when the file runs alone; one per pytest-xdist worker (2 workers share 2 cores)
    torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
    cache = tmp_path_factory.mktemp("cache")
    path = harness_clip_path(cache, "vit_b16")
    record = pretrain_clip({**ENTRY, "pretrain": {"iterations": 150, "batch_size": 48, "lr": 2e-3}}, path)
    return cache, path, record


@pytest.mark.slow
def test_pretraining_separates_classes(pretrained):
    cache, path, record = pretrained
    assert json.loads(path.with_suffix(".pt.json").read_text()) == record
    assert record["iterations"] == 150 and record["classes"] == len(pretraining_classes())
    assert record["final_loss"] < 0.5 * record["first_loss"]
    # held-out renders, zero-shot among every pre-training class: far above chance
    assert record["zero_shot_accuracy"] > 8 * record["chance"]
    assert record["region_zero_shot_accuracy"] > 8 * record["chance"]
    # text embeddings spread out, recomputed here independently of the record
    with torch.no_grad():
        random_clip = create_clip({**ENTRY, "source": "open_clip"}, init_seed=0).eval()
        trained = create_clip(ENTRY, cache_dir=str(cache), backbone="vit_b16").eval()
        before, after = _mean_cos(_ade_text(random_clip)), _mean_cos(_ade_text(trained))
    # over ADE-150 (140 of its names never pre-trained): well below the random init's ~0.9.
    # Measured 0.91 -> 0.75 with FC-CLIP's ADE-150 synonym lists (averaging more synonyms per
    # class pulls the class embeddings together; 0.9 -> 0.6 with the split objectInfo150 names)
    assert before > 0.85 and after < before - 0.1, (before, after)
    # over the pre-training classes themselves: nearly orthogonal
    assert record["mean_pairwise_cosine"] < 0.3


@pytest.mark.slow
def test_loaded_model_equals_saved_weights(pretrained):
    cache, path, _ = pretrained
    state = torch.load(path, weights_only=True)
    register_model_configs()
    plain = open_clip.create_model(ENTRY["model"])
    plain.load_state_dict(state)  # open_clip's own layout (strict)
    split = create_clip(ENTRY, cache_dir=str(cache), backbone="vit_b16").eval()
    x = torch.randn(2, 3, 64, 64)
    tok = get_tokenizer(ENTRY["model"])(["a photo of a dog.", "a photo of a sky."])
    with torch.no_grad():
        assert torch.allclose(plain.eval().encode_image(x), split.encode_image(x), atol=1e-5)
        assert torch.equal(plain.encode_text(tok), split.encode_text(tok))


def test_deterministic_from_seed(tmp_path):
    torch.set_num_threads(1)
    kw = {"iterations": 3, "batch_size": 8, "lr": 1e-3}
    a = pretrain_clip(ENTRY, tmp_path / "a.pt", seed=0, **kw)
    b = pretrain_clip(ENTRY, tmp_path / "b.pt", seed=0, **kw)
    c = pretrain_clip(ENTRY, tmp_path / "c.pt", seed=1, **kw)
    sa, sb, sc = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in "abc")
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert a["final_loss"] == b["final_loss"] != c["final_loss"]


def test_renders_show_the_class_look():
    from fisa.data.synthetic_scenes import appearance

    rng = np.random.default_rng(0)
    image, region = render_class_image(rng, "car", True, 64, ["sky"])
    colour = np.array(appearance("car").colour)
    assert image.shape == (64, 64, 3) and region.dtype == bool and 20 < region.sum() < 64 * 64
    assert np.abs(image[region].mean(0) - colour).max() < 6  # only noise on the region
    _, region = render_class_image(rng, "sky", False, 64, ["sky"])
    assert region.sum() >= 32 * 64


def test_pretraining_classes_cover_novel_ones():
    names = {c[0] for c in pretraining_classes()}
    from fisa.data.synthetic import active_classes

    for ds in ("coco", "ade150", "pc59"):
        stuff, things = active_classes(ds)
        assert {c.name for c in stuff + things} <= names
    assert {"person", "sky"} <= names and len(names) > 12  # more than COCO's 12


def test_fuse_split_state_dict_round_trip():
    register_model_configs()
    split = create_clip({**ENTRY, "source": "open_clip"}, init_seed=0)
    torch.manual_seed(0)
    fused = fuse_split_state_dict(split.state_dict())
    ref = open_clip.create_model(ENTRY["model"]).state_dict()
    assert fused.keys() == ref.keys() and all(torch.equal(fused[k], ref[k]) for k in ref)


def test_missing_weights_name_the_path_and_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"clip/vit_b16\.pt.*python -m fisa\.engine\.fetch"):
        create_clip(ENTRY, cache_dir=str(tmp_path), backbone="vit_b16")
    with pytest.raises(ValueError, match="model.backbone"):
        create_clip(ENTRY, cache_dir=None, backbone="vit_b16")
    with pytest.raises(ValueError, match="model.clip.source"):
        create_clip({**ENTRY, "source": "hub"})
