"""Eq. 6: L = 2 CE + 5 dice + 5 BCE, with an explicit Hungarian matching (Mask2Former / MaskCLIP).

Matching: per image, scipy's `linear_sum_assignment` on the cost
`w_ce * (-p(class)) + w_bce * pairwise BCE + w_dice * pairwise dice` between the Q proposals
(after the Distribution Adapter) and the N ground-truth segments (the loss weights double as cost
weights, as in Mask2Former). Each segment gets one proposal; unmatched proposals are "no object".
- CE: over all proposals; matched -> segment class, unmatched -> the no-object class C, whose
  term is down-weighted by `no_object_weight` (0.1, Mask2Former's eos_coef); weighted mean.
- dice and BCE: on matched pairs only, each summed over pairs and divided by the number of
  ground-truth segments in the batch (at least 1).
Where the mask terms are evaluated is `train.criterion.type` (docs/models.md):
- `point` (Mask2Former's criterion.py / matcher.py): the matching cost uses `num_points` uniform
  random points per image, shared by all its proposals and segments; the loss uses, per matched
  pair, `num_points` points of which `importance_sample_ratio` are the most uncertain (|logit|
  smallest) of `oversample_ratio * num_points` uniform candidates and the rest uniform. Logits
  and ground-truth masks are both read at these points by bilinear sampling (grid_sample,
  align_corners=False, zero outside), in normalised (x, y) in [0, 1] of each one's own frame.
  Random numbers are drawn in this order: per image the matching points [P, 2]; then, over all
  matched pairs of the batch, the candidates [M, oversample*P, 2], then the uniform rest
  [M, P - int(ratio*P), 2]; from `generator` when given, else from torch's RNG.
- `dense`: every pixel of the logits, against the ground-truth mask area-resampled to the
  logits' resolution (soft targets at the borders).
Only the Distribution Adapter is a trainable mask path, so dice/BCE train it; the class path is
trained by CE.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

DEFAULT_WEIGHTS = {"ce": 2.0, "dice": 5.0, "bce": 5.0}
NO_OBJECT_WEIGHT = 0.1


def resize_target_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """bool [N, H, W] -> float [N, h, w] in [0, 1] (area resampling; nearest when upsampling)."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size), dtype=torch.float32)
    m = masks[None].float()
    mode = "area" if masks.shape[-2] >= size[0] and masks.shape[-1] >= size[1] else "nearest"
    return F.interpolate(m, size=size, mode=mode)[0]


def pairwise_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits [Q, P], targets [N, P] -> 1 - dice [Q, N]."""
    p = logits.sigmoid()
    num = 2 * p @ targets.T
    den = p.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (num + 1) / (den + 1)


def pairwise_bce_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits [Q, P], targets [N, P] -> mean pixel BCE of every pair [Q, N]."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[-1]


@torch.no_grad()
def hungarian_match(class_logits: torch.Tensor, mask_logits: torch.Tensor, labels: torch.Tensor,
                    target_masks: torch.Tensor, weights: dict | None = None,
                    point_coords: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One image: class_logits [Q, C+1], mask_logits [Q, h, w], labels [N], target_masks float [N, H', W']
    -> (proposal indices, segment indices), each int64 [min(Q, N)].

    point_coords None: dense cost (target_masks must be at the logits' resolution); else [P, 2]
    normalised (x, y) points where both masks are sampled (Mask2Former's matcher)."""
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    if labels.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty
    prob = class_logits.float().softmax(-1)[:, labels]  # [Q, N]
    if point_coords is None:
        logits = mask_logits.float().flatten(1)
        tgt = target_masks.float().flatten(1)
    else:
        logits = point_sample(mask_logits.float(), point_coords)  # [Q, P]
        tgt = point_sample(target_masks.float(), point_coords)  # [N, P]
    cost = -w["ce"] * prob + w["bce"] * pairwise_bce_cost(logits, tgt) + w["dice"] * pairwise_dice_cost(logits, tgt)
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(np.asarray(cols), dtype=torch.int64)


def point_sample(masks: torch.Tensor, point_coords: torch.Tensor) -> torch.Tensor:
    """Bilinear values of masks [R, H, W] at normalised (x, y) points: [P, 2] (the same for every
    mask) or [R, P, 2] -> [R, P]. grid_sample with align_corners=False, zeros outside (detectron2's
    point_sample convention: (0, 0) is the top-left corner of the top-left pixel)."""
    if point_coords.dim() == 2:
        point_coords = point_coords.unsqueeze(0).expand(masks.shape[0], -1, -1)
    grid = (2.0 * point_coords - 1.0).unsqueeze(2).to(masks.dtype)  # [R, P, 1, 2]
    return F.grid_sample(masks.unsqueeze(1), grid, mode="bilinear", align_corners=False).squeeze(3).squeeze(1)


def importance_points(logits: torch.Tensor, num_points: int, oversample_ratio: float,
                      importance_sample_ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mask2Former's loss points for logits [M, h, w] -> [M, num_points, 2]: the
    int(importance_sample_ratio * num_points) most uncertain (smallest |logit|, read bilinearly)
    of int(oversample_ratio * num_points) uniform candidates, then uniform points for the rest."""
    m = logits.shape[0]
    num_candidates = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    if num_candidates < num_uncertain:
        raise ValueError(f"train.criterion: oversample_ratio {oversample_ratio} gives {num_candidates} "
                         f"candidates, fewer than the {num_uncertain} importance-sampled points")
    candidates = torch.rand(m, num_candidates, 2, generator=generator, device=logits.device)
    uncertainty = -point_sample(logits.float(), candidates).abs()  # [M, candidates]
    idx = uncertainty.topk(num_uncertain, dim=1).indices  # [M, uncertain]
    chosen = torch.gather(candidates, 1, idx.unsqueeze(-1).expand(-1, -1, 2))
    rest = torch.rand(m, num_points - num_uncertain, 2, generator=generator, device=logits.device)
    return torch.cat([chosen, rest], dim=1)


CRITERION_TYPES = ("point", "dense")


def check_criterion(criterion: dict | None) -> dict:
    """`train.criterion` validated: {type: dense} or {type: point, num_points, oversample_ratio,
    importance_sample_ratio}; None is the dense criterion."""
    if criterion is None:
        return {"type": "dense"}
    kind = criterion["type"] if isinstance(criterion, dict) and "type" in criterion else None
    if kind not in CRITERION_TYPES:
        raise ValueError(f"train.criterion.type: expected one of {list(CRITERION_TYPES)}, got {kind!r}")
    if kind == "point":
        for key in ("num_points", "oversample_ratio", "importance_sample_ratio"):
            if key not in criterion:
                raise KeyError(f"train.criterion.{key}: missing for type 'point'")
        if int(criterion["num_points"]) < 1 or not 0 <= float(criterion["importance_sample_ratio"]) <= 1:
            raise ValueError(f"train.criterion: num_points >= 1 and importance_sample_ratio in [0, 1] "
                             f"expected, got {criterion}")
    return criterion


def set_criterion(outputs: dict, targets: list[dict], weights: dict | None = None,
                  no_object_weight: float = NO_OBJECT_WEIGHT, criterion: dict | None = None,
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Eq. 6 over a batch. outputs: mask_logits [B, Q, h, w], class_logits [B, Q, C+1];
    targets: list of {"labels": int64[N], "masks": bool[N, H, W]}; criterion: `train.criterion`
    (None = dense); generator: the point criterion's random source (default torch's RNG).
    Returns {loss_ce, loss_dice, loss_bce, loss (weighted sum)}; also records the matching under
    outputs["matches"] (list of (proposal idx, segment idx))."""
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    crit = check_criterion(criterion)
    points = crit["type"] == "point"
    mask_logits, class_logits = outputs["mask_logits"], outputs["class_logits"]
    b, q, c1 = class_logits.shape
    if len(targets) != b:
        raise ValueError(f"loss: {len(targets)} targets for a batch of {b} images")
    size = tuple(mask_logits.shape[-2:])
    target_classes = torch.full((b, q), c1 - 1, dtype=torch.int64, device=class_logits.device)
    pred_masks, gt_masks, matches = [], [], []
    for i, t in enumerate(targets):
        labels = t["labels"]  # checked where it lies (a shape-only model may run on the meta device)
        if labels.numel() and int(labels.max()) >= c1 - 1:
            raise ValueError(f"loss: target label {int(labels.max())} out of range for {c1 - 1} classes")
        labels = labels.to(class_logits.device)
        if points:  # targets stay at their own resolution; both are read at the same points
            tmasks = t["masks"].to(mask_logits.device).float()
            coords = torch.rand(int(crit["num_points"]), 2, generator=generator, device=mask_logits.device)
        else:
            tmasks, coords = resize_target_masks(t["masks"].to(mask_logits.device), size), None
        src, tgt = hungarian_match(class_logits[i].detach(), mask_logits[i].detach(), labels, tmasks, w, coords)
        src, tgt = src.to(class_logits.device), tgt.to(class_logits.device)
        matches.append((src, tgt))
        target_classes[i, src] = labels[tgt]
        pred_masks.append(mask_logits[i, src])
        gt_masks.append(tmasks[tgt])
    outputs["matches"] = matches
    class_weight = class_logits.new_ones(c1)
    class_weight[-1] = no_object_weight
    loss_ce = F.cross_entropy(class_logits.float().flatten(0, 1), target_classes.flatten(), weight=class_weight.float())
    num_masks = max(sum(len(t["labels"]) for t in targets), 1)
    if points and sum(len(m) for m in pred_masks):
        pred_full = torch.cat(pred_masks).float()  # [M, h, w]
        with torch.no_grad():
            coords = importance_points(pred_full.detach(), int(crit["num_points"]), float(crit["oversample_ratio"]),
                                       float(crit["importance_sample_ratio"]), generator)
            # each image's targets keep their own frame; read them at their pairs' points
            splits = torch.split(coords, [len(m) for m in pred_masks])
            gt = torch.cat([point_sample(g, c) for g, c in zip(gt_masks, splits) if len(g)])
        pred = point_sample(pred_full, coords)  # [M, P]
    elif points:
        pred = gt = mask_logits.new_zeros(0, 1)
    else:
        pred = torch.cat(pred_masks).flatten(1).float()  # [M, h*w]
        gt = torch.cat(gt_masks).flatten(1)
    if pred.shape[0]:
        p = pred.sigmoid()
        dice = 1 - (2 * (p * gt).sum(-1) + 1) / (p.sum(-1) + gt.sum(-1) + 1)
        loss_dice = dice.sum() / num_masks
        loss_bce = F.binary_cross_entropy_with_logits(pred, gt, reduction="none").mean(-1).sum() / num_masks
    else:
        loss_dice = loss_bce = mask_logits.sum() * 0.0
    loss = w["ce"] * loss_ce + w["dice"] * loss_dice + w["bce"] * loss_bce
    return {"loss_ce": loss_ce, "loss_dice": loss_dice, "loss_bce": loss_bce, "loss": loss}
