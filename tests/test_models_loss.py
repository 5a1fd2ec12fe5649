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
    from test_models_mask_attention import LOSS, model_cfg

    model = build_model(model_cfg(), "fisa").train()
    vocab = model.encode_vocabulary([["a"], ["b"]])
    targets = [{"labels": torch.tensor([1]), "masks": torch.rand(1, 64, 64) > 0.5}]
    out = model(torch.rand(1, 3, 64, 64) * 255, vocab)
    terms = model.loss(out, targets, **LOSS)
    (terms["loss_dice"] + terms["loss_bce"]).backward()
    last = model.distribution_adapter.layers[-1]
    assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------- point-sampled criterion (Mask2Former)
POINT = {"type": "point", "num_points": 40, "oversample_ratio": 3.0, "importance_sample_ratio": 0.75}


def ref_bilinear_points(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Value of img [H, W] at normalised (x, y) points [P, 2], written out: pixel (r, c) has its centre
    at ((c + 0.5) / W, (r + 0.5) / H); bilinear between the four nearest centres, zero outside."""
    h, w = img.shape
    pad = np.zeros((h + 2, w + 2))
    pad[1:-1, 1:-1] = img
    out = np.empty(len(pts))
    for k, (x, y) in enumerate(pts):
        fx, fy = x * w - 0.5, y * h - 0.5
        c0, r0 = int(np.floor(fx)), int(np.floor(fy))
        ax, ay = fx - c0, fy - r0
        v = lambda r, c: pad[r + 1, c + 1] if -1 <= r <= h and -1 <= c <= w else 0.0  # noqa: E731
        out[k] = ((1 - ay) * ((1 - ax) * v(r0, c0) + ax * v(r0, c0 + 1))
                  + ay * ((1 - ax) * v(r0 + 1, c0) + ax * v(r0 + 1, c0 + 1)))
    return out


def ref_point_criterion(class_logits, mask_logits, targets, crit, seed, w=(2.0, 5.0, 5.0)):
    """Mask2Former's criterion from its description, with numpy and a brute-force assignment.
    Random numbers come from torch.Generator(seed) in the documented order: per image the matching
    points [P, 2]; then for all matched pairs the candidates [M, 3P, 2] and the uniform rest."""
    g = torch.Generator().manual_seed(seed)
    P = crit["num_points"]
    matches, pairs = [], []
    for i, t in enumerate(targets):
        pts = torch.rand(P, 2, generator=g).double().numpy()
        labels, masks = t["labels"].numpy(), t["masks"].double().numpy()
        q, n = mask_logits.shape[1], len(labels)
        if n == 0:
            matches.append(((), ()))
            continue
        prob = np.exp(class_logits[i]) / np.exp(class_logits[i]).sum(-1, keepdims=True)
        lp = [ref_bilinear_points(mask_logits[i, a], pts) for a in range(q)]
        tp = [ref_bilinear_points(masks[b], pts) for b in range(n)]
        cost = np.zeros((q, n))
        for a in range(q):
            p = 1 / (1 + np.exp(-lp[a]))
            for b in range(n):
                bce = np.mean(-(tp[b] * np.log(p) + (1 - tp[b]) * np.log(1 - p)))
                dice = 1 - (2 * (p * tp[b]).sum() + 1) / (p.sum() + tp[b].sum() + 1)
                cost[a, b] = -w[0] * prob[a, labels[b]] + w[2] * bce + w[1] * dice
        best = min(itertools.permutations(range(q), n), key=lambda perm: sum(cost[perm[b], b] for b in range(n)))
        order = np.argsort(best)  # proposals ascending, as linear_sum_assignment returns them
        src, tgt = tuple(np.asarray(best)[order]), tuple(order)
        matches.append((src, tgt))
        pairs += [(i, a, b) for a, b in zip(src, tgt)]
    m = len(pairs)
    n_cand, n_unc = int(P * crit["oversample_ratio"]), int(crit["importance_sample_ratio"] * P)
    cand = torch.rand(m, n_cand, 2, generator=g).double().numpy()
    rest = torch.rand(m, P - n_unc, 2, generator=g).double().numpy()
    num_masks = max(sum(len(t["labels"]) for t in targets), 1)
    dice_sum = bce_sum = 0.0
    for k, (i, a, b) in enumerate(pairs):
        unc = -np.abs(ref_bilinear_points(mask_logits[i, a], cand[k]))
        pts = np.concatenate([cand[k][np.argsort(-unc, kind="stable")[:n_unc]], rest[k]])
        x = ref_bilinear_points(mask_logits[i, a], pts)
        t = ref_bilinear_points(targets[i]["masks"][b].double().numpy(), pts)
        p = 1 / (1 + np.exp(-x))
        dice_sum += 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
        bce_sum += np.mean(np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x))))
    return matches, dice_sum / num_masks, bce_sum / num_masks


def _point_batch(seed):
    """2 images (3 and 2 segments) + 1 without segments; 5 proposals of 9x11 logits; 36x44 targets
    (the 1/4-resolution convention, with odd sizes)."""
    g = torch.Generator().manual_seed(seed)
    mask_logits = torch.randn(3, 5, 9, 11, generator=g) * 3
    class_logits = torch.randn(3, 5, 5, generator=g) * 2
    targets = []
    for n in (3, 2, 0):
        masks = torch.zeros(n, 36, 44, dtype=torch.bool)
        for j in range(n):
            y, x = torch.randint(0, 24, (2,), generator=g).tolist()
            masks[j, y:y + 12, x:x + 18] = True
        targets.append({"labels": torch.randint(0, 4, (n,), generator=g), "masks": masks})
    return mask_logits, class_logits, targets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_point_criterion_equals_reference_on_identical_points(seed):
    mask_logits, class_logits, targets = _point_batch(seed)
    outputs = {"mask_logits": mask_logits, "class_logits": class_logits}
    out = set_criterion(outputs, targets, criterion=POINT, generator=torch.Generator().manual_seed(100 + seed))
    matches, dice, bce = ref_point_criterion(class_logits.double().numpy(), mask_logits.double().numpy(),
                                             targets, POINT, 100 + seed)
    assert [(tuple(s.tolist()), tuple(t.tolist())) for s, t in outputs["matches"]] == \
        [(tuple(int(a) for a in s), tuple(int(b) for b in t)) for s, t in matches]
    assert float(out["loss_dice"]) == pytest.approx(dice, abs=1e-5)
    assert float(out["loss_bce"]) == pytest.approx(bce, abs=1e-5)
    # CE is the criterion's, not the points': the same as the dense criterion's for the same matching
    dense_outputs = {"mask_logits": mask_logits, "class_logits": class_logits}
    set_criterion(dense_outputs, targets)
    if all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
           for a, b in zip(dense_outputs["matches"], outputs["matches"])):
        assert float(out["loss_ce"]) == pytest.approx(float(set_criterion(dense_outputs, targets)["loss_ce"]))


def test_point_criterion_is_reproducible_draws_its_points_and_trains():
    mask_logits, class_logits, targets = _point_batch(5)
    mask_logits.requires_grad_(True)
    outs = [set_criterion({"mask_logits": mask_logits, "class_logits": class_logits}, targets, criterion=POINT,
                          generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in ("loss_dice", "loss_bce", "loss"))
    other = set_criterion({"mask_logits": mask_logits, "class_logits": class_logits}, targets, criterion=POINT,
                          generator=torch.Generator().manual_seed(8))
    assert float(other["loss_bce"].detach()) != float(outs[0]["loss_bce"].detach())
    dense = set_criterion({"mask_logits": mask_logits, "class_logits": class_logits}, targets,
                          criterion={"type": "dense"})
    assert float(dense["loss_bce"].detach()) != float(outs[0]["loss_bce"].detach())
    outs[0]["loss"].backward()
    assert mask_logits.grad is not None and mask_logits.grad.abs().sum() > 0
    # the global RNG is used without a generator
    torch.manual_seed(3)
    a = set_criterion({"mask_logits": mask_logits, "class_logits": class_logits}, targets, criterion=POINT)
    torch.manual_seed(3)
    b = set_criterion({"mask_logits": mask_logits, "class_logits": class_logits}, targets, criterion=POINT)
    assert torch.equal(a["loss"], b["loss"])


def test_point_criterion_config_errors_and_empty_batch():
    mask_logits, class_logits, targets = _point_batch(0)
    outputs = {"mask_logits": mask_logits, "class_logits": class_logits}
    with pytest.raises(ValueError, match="train.criterion.type"):
        set_criterion(outputs, targets, criterion={"type": "sparse"})
    with pytest.raises(KeyError, match="train.criterion.num_points"):
        set_criterion(outputs, targets, criterion={"type": "point"})
    with pytest.raises(ValueError, match="oversample_ratio"):
        set_criterion(outputs, targets, criterion={**POINT, "oversample_ratio": 0.5})
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 36, 44, dtype=torch.bool)}] * 3
    out = set_criterion(outputs, empty, criterion=POINT)
    assert float(out["loss_dice"]) == 0.0 and float(out["loss_bce"]) == 0.0 and torch.isfinite(out["loss"])
