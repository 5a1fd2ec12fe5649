"""Semantic / panoptic post-processing and the oracle modes of Fig. 2a."""
import numpy as np
import pytest
import torch

from fisa.models import build_model
from fisa.models.oracle import oracle_class_logits, oracle_proposals
from fisa.models.postprocess import panoptic_inference, semantic_inference, upsample_mask_logits

from test_models_mask_attention import model_cfg


def test_semantic_inference_matches_loop_reference():
    torch.manual_seed(0)
    ml, cl = torch.randn(4, 5, 6), torch.randn(4, 4)
    out = semantic_inference(ml, cl).numpy()
    m, c = ml.numpy(), cl.numpy()
    ref = np.zeros((3, 5, 6))
    for q in range(4):
        p = np.exp(c[q]) / np.exp(c[q]).sum()
        ref += p[:3, None, None] * (1 / (1 + np.exp(-m[q])))[None]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def _logits(label, num_classes=3, score=10.0):
    out = torch.full((num_classes + 1,), -score)
    out[label] = score
    return out


def test_panoptic_inference_merges_stuff_drops_void_and_occluded():
    h, w = 8, 8
    masks = torch.full((5, h, w), -10.0)
    masks[0, :4, :4] = 10.0  # thing, class 0
    masks[1, 4:, :] = 10.0  # stuff, class 2
    masks[2, :4, 4:] = 10.0  # stuff, class 2 again -> merged with 1
    masks[3, :, :] = 10.0  # no object: dropped
    masks[4, :4, :4] = 10.0  # thing class 1, same pixels as 0 but lower score -> fully occluded, dropped
    classes = torch.stack([_logits(0), _logits(2), _logits(2), _logits(3), _logits(1, score=1.0)])
    seg, info = panoptic_inference(masks, classes, is_thing=[True, True, False],
                                   object_mask_threshold=0.0, overlap_threshold=0.8)
    assert seg.dtype == torch.int32
    assert [(s["category_id"], s["isthing"]) for s in info] == [(0, True), (2, False)]
    assert (seg[:4, :4] == info[0]["id"]).all()
    assert (seg[4:] == info[1]["id"]).all() and (seg[:4, 4:] == info[1]["id"]).all()
    assert 0 < info[0]["score"] <= 1
    with pytest.raises(ValueError, match="is_thing has 2 entries for 3 classes"):
        panoptic_inference(masks, classes, is_thing=[True, False], object_mask_threshold=0.0, overlap_threshold=0.8)


@pytest.mark.parametrize("threshold,kept", [(0.8, False), (0.5, True), (0.3, True)])
def test_panoptic_partly_occluded_segment_is_kept_by_the_overlap_threshold(threshold, kept):
    """A thing of 32 pixels of which the higher-scoring thing in front hides 16: its visible
    share is 16 / 32 = 0.5, kept when that is >= the overlap threshold."""
    masks = torch.full((2, 8, 8), -10.0)
    masks[0, :4, :4] = 10.0  # in front: class 0, score ~1
    masks[1, :4, :] = 10.0  # behind: class 1, lower score, 32 pixels, 16 of them visible
    classes = torch.stack([_logits(0), _logits(1, score=1.0)])
    # no score filter (object_mask_threshold 0): the overlap threshold alone decides
    seg, info = panoptic_inference(masks, classes, is_thing=[True, True, False], object_mask_threshold=0.0,
                                   overlap_threshold=threshold)
    assert [s["category_id"] for s in info] == ([0, 1] if kept else [0])
    assert (seg[:4, :4] == info[0]["id"]).all()
    behind = seg[:4, 4:]
    assert (behind == info[1]["id"]).all() if kept else (behind == 0).all()
    assert (seg[4:] == 0).all()


def test_panoptic_threshold_and_empty():
    masks = torch.full((1, 4, 4), 10.0)
    seg, info = panoptic_inference(masks, _logits(0, score=0.1)[None], [True, False, False],
                                   object_mask_threshold=0.9, overlap_threshold=0.8)
    assert info == [] and (seg == 0).all()


def test_upsample_mask_logits_shape():
    assert upsample_mask_logits(torch.zeros(2, 3, 4, 5), (8, 10)).shape == (2, 3, 8, 10)


def _targets():
    masks = torch.zeros(3, 64, 64, dtype=torch.bool)
    masks[0, :32] = True
    masks[1, 32:, :32] = True
    masks[2, 32:, 32:] = True
    t0 = {"labels": torch.tensor([1, 0, 2]), "masks": masks}
    t1 = {"labels": torch.tensor([2]), "masks": masks[:1].clone()}
    return [t0, t1]


def test_oracle_generator_uses_ground_truth_masks():
    model = build_model(model_cfg(), "oracle_generator")
    vocab = model.encode_vocabulary([["a"], ["b"], ["c"]])
    targets = _targets()
    out = model(torch.rand(2, 3, 64, 64) * 255, vocab, targets=targets)
    assert out["mask_logits"].shape == (2, 3, 64, 64)
    assert torch.equal(out["mask_logits"][0] > 0, targets[0]["masks"])
    assert torch.equal(out["mask_logits"][1, :1] > 0, targets[1]["masks"])
    # padded proposals of image 1 are empty and "no object"
    assert not (out["mask_logits"][1, 1:] > 0).any()
    assert (out["class_logits"][1, 1:].argmax(-1) == 3).all()
    with pytest.raises(ValueError, match="targets"):
        model(torch.rand(1, 3, 64, 64) * 255, vocab)


def test_oracle_classifier_labels_best_iou_segment():
    targets = _targets()
    mask_logits = torch.full((1, 4, 16, 16), -5.0)
    mask_logits[0, 0, :6] = 5.0  # mostly segment 0 (class 1)
    mask_logits[0, 1, 8:, 2:8] = 5.0  # inside segment 1 (class 0)
    mask_logits[0, 2, 7:, 9:] = 5.0  # mostly segment 2 (class 2)
    # proposal 3 empty -> no object
    labels = oracle_class_logits(mask_logits, targets[:1], num_classes=3).argmax(-1)
    assert labels.tolist() == [[1, 0, 2, 3]]
    model = build_model(model_cfg(), "oracle_classifier")
    vocab = model.encode_vocabulary([["a"], ["b"], ["c"]])
    out = model(torch.rand(1, 3, 64, 64) * 255, vocab, proposals=mask_logits, targets=targets[:1])
    assert out["class_logits"].argmax(-1).tolist() == [[1, 0, 2, 3]]


def test_oracle_proposals_resize():
    logits, valid = oracle_proposals(_targets(), (16, 16))
    assert logits.shape == (2, 3, 16, 16) and valid.tolist() == [[True, True, True], [True, False, False]]
    assert (logits[0, 0, :8] > 0).all() and not (logits[0, 0, 8:] > 0).any()
