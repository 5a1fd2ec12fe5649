"""The oracle modes of Fig. 2a (MaskCLIP setting, nothing trained).

- oracle generator: the ground-truth segments are the proposals (predicted classes).
- oracle classifier: the generator's proposals, each labelled with the class of the ground-truth
  segment it overlaps best (IoU of the binarised proposal, logit > 0); a proposal that overlaps no
  segment is labelled "no object".
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

ORACLE_LOGIT = 30.0  # |logit| given to oracle decisions: softmax ~ one-hot even over 847 classes


def oracle_proposals(targets: list[dict], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth masks as proposals: targets' masks bool [N_i, H, W] -> (mask logits [B, Nmax, H', W'],
    valid bool [B, Nmax]). Logits are +/-ORACLE_LOGIT, so sigmoid > 0.5 is exactly the (nearest-resized)
    ground truth; images with fewer segments are padded with empty, invalid proposals."""
    if targets is None:
        raise ValueError("oracle_generator: forward needs `targets` (the ground-truth segments)")
    n_max = max(max((len(t["labels"]) for t in targets), default=0), 1)
    device = targets[0]["masks"].device if targets else "cpu"
    logits = torch.full((len(targets), n_max, *size), -ORACLE_LOGIT, device=device)
    valid = torch.zeros(len(targets), n_max, dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        n = len(t["labels"])
        if n:
            m = t["masks"].float()
            if tuple(m.shape[-2:]) != tuple(size):
                m = F.interpolate(m[None], size=size, mode="nearest")[0]
            logits[i, :n] = torch.where(m > 0.5, ORACLE_LOGIT, -ORACLE_LOGIT)
            valid[i, :n] = True
    return logits, valid


def no_object_logits(num_queries: int, num_classes: int, batch: int, device) -> torch.Tensor:
    """Class logits [B, Q, C+1] that put all mass on "no object" (for padded oracle proposals)."""
    out = torch.full((batch, num_queries, num_classes + 1), -ORACLE_LOGIT, device=device)
    out[..., -1] = ORACLE_LOGIT
    return out


@torch.no_grad()
def oracle_class_logits(mask_logits: torch.Tensor, targets: list[dict], num_classes: int) -> torch.Tensor:
    """mask_logits [B, Q, h, w] + targets -> class logits [B, Q, C+1]: one-hot on the class of the
    best-IoU ground-truth segment, or on "no object" when the proposal overlaps none."""
    if targets is None:
        raise ValueError("oracle_classifier: forward needs `targets` (the ground-truth segments)")
    b, q, h, w = mask_logits.shape
    out = no_object_logits(q, num_classes, b, mask_logits.device)
    for i, t in enumerate(targets):
        labels = t["labels"].to(mask_logits.device)
        if labels.numel() == 0:
            continue
        gt = F.interpolate(t["masks"][None].float().to(mask_logits.device), size=(h, w), mode="nearest")[0] > 0.5
        pred = mask_logits[i] > 0  # [Q, h, w]
        inter = pred.flatten(1).float() @ gt.flatten(1).float().T  # [Q, N]
        union = pred.flatten(1).sum(-1, keepdim=True) + gt.flatten(1).sum(-1)[None] - inter
        iou = inter / union.clamp(min=1)
        best_iou, best = iou.max(-1)
        hit = best_iou > 0
        cls = labels[best]
        out[i, hit] = -ORACLE_LOGIT
        out[i, hit.nonzero()[:, 0], cls[hit]] = ORACLE_LOGIT
    return out
