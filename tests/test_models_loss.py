"""Eq. 6 loss and its Hungarian matching, against brute force and hand-written references."""
import itertools
import math

import numpy as np
import pytest
import torch

from fisa.models.loss import hungarian_match, set_criterion


def brute_force_cost(class_logits, mask_logits, labels, masks, w=(2.0, 5.0, 5.0)):
    """Independent pairwise cost with Python loops over pairs and pixels (numpy)."""
    prob = np.exp(class_logits) / np.exp(class_logits).sum(-1, keepdims=True)
    q, n = len(class_logits), len(labels)
    cost = np.zeros((q, n))
    for i in range(q):
        x = mask_logits[i].ravel()
        p = 1 / (1 + np.exp(-x))
        for j in range(n):
            t = masks[j].ravel()
            bce = np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p)))
            dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
            cost[i, j] = -w[0] * prob[i, labels[j]] + w[2] * bce + w[1] * dice
    return cost


def test_hungarian_matching_equals_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(5):
        q, n, c = 5, 3, 4
        cl = rng.normal(size=(q, c + 1)).astype(np.float32)
        ml = rng.normal(size=(q, 6, 6)).astype(np.float32) * 3
        labels = rng.integers(0, c, size=n)
        masks = (rng.random((n, 6, 6)) > 0.5).astype(np.float32)
        cost = brute_force_cost(cl, ml, labels, masks)
        best = min(itertools.permutations(range(q), n), key=lambda perm: sum(cost[perm[j], j] for j in range(n)))
        src, tgt = hungarian_match(torch.tensor(cl), torch.tensor(ml), torch.tensor(labels), torch.tensor(masks))
        got = dict(zip(tgt.tolist(), src.tolist()))
        assert [got[j] for j in range(n)] == list(best)


def test_loss_terms_against_hand_computation():
    # One image, 2 proposals, 1 segment; proposal 1 clearly matches.
    mask_logits = torch.tensor([[[-2.0, -2.0], [-2.0, -2.0]], [[3.0, -1.0], [0.5, -4.0]]])[None]
    class_logits = torch.tensor([[0.0, 0.0, 2.0], [1.0, 0.0, 0.0]])[None]  # C = 2 (+ no object)
    masks = torch.tensor([[[True, False], [True, False]]])
    out = set_criterion({"mask_logits": mask_logits, "class_logits": class_logits},
                        [{"labels": torch.tensor([0]), "masks": masks}])
    assert out["loss_ce"].requires_grad is False
    p = torch.sigmoid(torch.tensor([3.0, -1.0, 0.5, -4.0])).numpy()
    t = np.array([1.0, 0.0, 1.0, 0.0])
    dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    bce = np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p)))
    # CE: proposal 1 -> class 0 (weight 1), proposal 0 -> no object (weight 0.1); weighted mean
    ce1 = -math.log(math.exp(1) / (math.exp(1) + 2))
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 2))
    ce = (1.0 * ce1 + 0.1 * ce0) / 1.1
    assert float(out["loss_dice"]) == pytest.approx(dice, rel=1e-5)
    assert float(out["loss_bce"]) == pytest.approx(bce, rel=1e-5)
    assert float(out["loss_ce"]) == pytest.approx(ce, rel=1e-5)
    assert float(out["loss"]) == pytest.approx(2 * ce + 5 * dice + 5 * bce, rel=1e-5)


def test_perfect_prediction_has_near_zero_loss_and_empty_targets_work():
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, :4] = True
    masks[1, 4:] = True
    mask_logits = torch.full((1, 3, 8, 8), -20.0)
    mask_logits[0, 1][masks[0]] = 20.0
    mask_logits[0, 2][masks[1]] = 20.0
    class_logits = torch.full((1, 3, 4), -20.0)
    class_logits[0, 0, 3] = 20.0  # no object
    class_logits[0, 1, 2] = 20.0
    class_logits[0, 2, 0] = 20.0
    out = set_criterion({"mask_logits": mask_logits, "class_logits": class_logits},
                        [{"labels": torch.tensor([2, 0]), "masks": masks}])
    assert float(out["loss"]) < 1e-3
    # No ground truth: every proposal is "no object", dice/BCE are 0
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 8, 8, dtype=torch.bool)}]
    out = set_criterion({"mask_logits": mask_logits, "class_logits": class_logits}, empty)
    ref = torch.nn.functional.cross_entropy(class_logits[0], torch.full((3,), 3))
    assert float(out["loss_ce"]) == pytest.approx(float(ref), rel=1e-5)
    assert float(out["loss_dice"]) == 0.0 and float(out["loss_bce"]) == 0.0


def test_loss_rejects_bad_targets():
    outputs = {"mask_logits": torch.zeros(1, 2, 4, 4), "class_logits": torch.zeros(1, 2, 3)}
    with pytest.raises(ValueError, match="label 5 out of range for 2 classes"):
        set_criterion(outputs, [{"labels": torch.tensor([5]), "masks": torch.ones(1, 4, 4, dtype=torch.bool)}])
    with pytest.raises(ValueError, match="2 targets for a batch of 1"):
        set_criterion(outputs, [{"labels": torch.tensor([0]), "masks": torch.ones(1, 4, 4, dtype=torch.bool)}] * 2)


def test_adapter_gets_gradient_from_mask_terms():
    from fisa.models import build_model
    from test_models_mask_attention import model_cfg

    model = build_model(model_cfg(), "fisa").train()
    vocab = model.encode_vocabulary([["a"], ["b"]])
    targets = [{"labels": torch.tensor([1]), "masks": torch.rand(1, 64, 64) > 0.5}]
    out = model(torch.rand(1, 3, 64, 64) * 255, vocab)
    terms = model.loss(out, targets)
    (terms["loss_dice"] + terms["loss_bce"]).backward()
    last = model.distribution_adapter.layers[-1]
    assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0
