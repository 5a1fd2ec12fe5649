"""Eq. 6: L = 2 CE + 5 dice + 5 BCE, with an explicit Hungarian matching (Mask2Former / MaskCLIP).

Matching: per image, scipy's `linear_sum_assignment` on the cost
`w_ce * (-p(class)) + w_bce * pairwise BCE + w_dice * pairwise dice` between the Q proposals
(after the Distribution Adapter) and the N ground-truth segments (the loss weights double as cost
weights, as in Mask2Former). Each segment gets one proposal; unmatched proposals are "no object".
- CE: over all proposals; matched -> segment class, unmatched -> the no-object class C, whose
  term is down-weighted by `no_object_weight` (0.1, Mask2Former's eos_coef); weighted mean.
- dice and BCE: on matched pairs only, between the proposal's mask logits and the ground-truth
  mask area-resampled to the logits' resolution (soft targets at the borders), each summed over
  pairs and divided by the number of ground-truth segments in the batch (at least 1).
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
                    target_masks: torch.Tensor, weights: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One image: class_logits [Q, C+1], mask_logits [Q, h, w], labels [N], target_masks float [N, h, w]
    -> (proposal indices, segment indices), each int64 [min(Q, N)]."""
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    if labels.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty
    prob = class_logits.float().softmax(-1)[:, labels]  # [Q, N]
    logits = mask_logits.float().flatten(1)
    tgt = target_masks.float().flatten(1)
    cost = -w["ce"] * prob + w["bce"] * pairwise_bce_cost(logits, tgt) + w["dice"] * pairwise_dice_cost(logits, tgt)
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(np.asarray(cols), dtype=torch.int64)


def set_criterion(outputs: dict, targets: list[dict], weights: dict | None = None,
                  no_object_weight: float = NO_OBJECT_WEIGHT) -> dict[str, torch.Tensor]:
    """Eq. 6 over a batch. outputs: mask_logits [B, Q, h, w], class_logits [B, Q, C+1];
    targets: list of {"labels": int64[N], "masks": bool[N, H, W]}.
    Returns {loss_ce, loss_dice, loss_bce, loss (weighted sum)}; also records the matching under
    outputs["matches"] (list of (proposal idx, segment idx))."""
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
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
        tmasks = resize_target_masks(t["masks"].to(mask_logits.device), size)
        src, tgt = hungarian_match(class_logits[i].detach(), mask_logits[i].detach(), labels, tmasks, w)
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
