"""Vocabulary text embeddings cached on disk once per text tower's weights (fisa.models.text)."""
import pytest
import torch

from fisa.models import text
from fisa.models.clip_backbone import create_clip

TINY = {"model": "fisa-tiny-vit-b", "pretrained": None, "image_size": 64}
NAMES = [["cat"], ["dog", "puppy"], ["sky"]]


def test_a_vocabulary_is_encoded_once_then_read_back(tmp_path, monkeypatch):
    clip, tok = create_clip(TINY, init_seed=0), text.get_tokenizer(TINY["model"])
    fp = text.text_tower_fingerprint(clip)
    first = text.cached_class_embeddings(tmp_path, fp, clip, tok, NAMES, ["a photo of a {}."])
    assert torch.allclose(first, text.encode_class_names(clip, tok, NAMES, ["a photo of a {}."]))
    assert len(list(tmp_path.glob("*.pt"))) == 1 and not list(tmp_path.glob("*.tmp*"))

    def refuse(*a, **k):
        raise AssertionError("encoded again")

    monkeypatch.setattr(text, "encode_class_names", refuse)
    again = text.cached_class_embeddings(tmp_path, fp, create_clip(TINY, init_seed=0), tok, NAMES,
                                         ["a photo of a {}."])
    assert torch.equal(again, first)
    # another template set, class list or text tower is another key: encoded (refused here)
    for args in ((fp, NAMES, ["{}"]), (fp, NAMES[:2], ["a photo of a {}."])):
        with pytest.raises(AssertionError, match="encoded again"):
            text.cached_class_embeddings(tmp_path, args[0], clip, tok, args[1], args[2])
    other = text.text_tower_fingerprint(create_clip(TINY, init_seed=1))
    assert other != fp and text.text_tower_fingerprint(create_clip(TINY, init_seed=0)) == fp


def test_fingerprint_ignores_the_visual_tower_and_is_none_on_meta():
    clip = create_clip(TINY, init_seed=0)
    fp = text.text_tower_fingerprint(clip)
    with torch.no_grad():
        clip.visual.conv1.weight.add_(1.0)
    assert text.text_tower_fingerprint(clip) == fp
    with torch.no_grad():
        clip.token_embedding.weight.add_(1.0)
    assert text.text_tower_fingerprint(clip) != fp
    import open_clip

    assert text.text_tower_fingerprint(open_clip.create_model(TINY["model"], device="meta")) is None
