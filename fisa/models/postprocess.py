"""Semantic and panoptic outputs from classified proposals (Mask2Former-style inference).

Both take one image's `mask_logits` [Q, h, w] (upsample them to the output size first, e.g. with
`upsample_mask_logits`) and `class_logits` [Q, C+1] (last = no object).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def upsample_mask_logits(mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[..., Q, h, w] -> [..., Q, H, W] (bilinear, as Mask2Former)."""
    shape = mask_logits.shape
    x = mask_logits.reshape(-1, *shape[-3:])
    x = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False)
    return x.reshape(*shape[:-2], *size)


def semantic_inference(mask_logits: torch.Tensor, class_logits: torch.Tensor) -> torch.Tensor:
    """Per-class score map [C, h, w] = sum_q p(class | q) * sigmoid(mask_q); argmax(0) gives the labels."""
    probs = class_logits.float().softmax(-1)[:, :-1]  # [Q, C]
    return torch.einsum("qc,qhw->chw", probs, mask_logits.float().sigmoid())


def panoptic_inference(mask_logits: torch.Tensor, class_logits: torch.Tensor, is_thing: list[bool],
                       object_mask_threshold: float, overlap_threshold: float):
    """Mask2Former panoptic merging -> (panoptic_seg int32 [h, w] (0 = void), segments_info).

    Proposals whose top class is "no object" or whose score is <= `object_mask_threshold` are
    dropped; each pixel goes to the kept proposal with the highest score x mask probability;
    a segment keeps its pixels only if they are >= `overlap_threshold` of its own (p >= 0.5) area;
    stuff segments of the same class are merged. segments_info: list of {id, category_id
    (contiguous index), isthing, score}. Both thresholds come from the config
    (eval.object_mask_threshold, eval.overlap_threshold; their sources in docs/choices.md).
    """
    num_classes = class_logits.shape[-1] - 1
    if len(is_thing) != num_classes:
        raise ValueError(f"panoptic_inference: is_thing has {len(is_thing)} entries for {num_classes} classes")
    scores, labels = class_logits.float().softmax(-1).max(-1)
    masks = mask_logits.float().sigmoid()
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], masks[keep]
    h, w = masks.shape[-2:]
    panoptic_seg = torch.zeros((h, w), dtype=torch.int32, device=masks.device)
    segments_info: list[dict] = []
    if cur_masks.shape[0] == 0:
        return panoptic_seg, segments_info
    cur_mask_ids = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)  # [h, w]
    stuff_segment: dict[int, int] = {}
    segment_id = 0
    for k in range(cur_classes.shape[0]):
        pred_class = int(cur_classes[k])
        isthing = bool(is_thing[pred_class])
        mask_area = int((cur_mask_ids == k).sum())
        original_area = int((cur_masks[k] >= 0.5).sum())
        mask = (cur_mask_ids == k) & (cur_masks[k] >= 0.5)
        if mask_area == 0 or original_area == 0 or int(mask.sum()) == 0:
            continue
        if mask_area / original_area < overlap_threshold:
            continue
        if not isthing and pred_class in stuff_segment:
            panoptic_seg[mask] = stuff_segment[pred_class]
            continue
        segment_id += 1
        if not isthing:
            stuff_segment[pred_class] = segment_id
        panoptic_seg[mask] = segment_id
        segments_info.append({"id": segment_id, "category_id": pred_class, "isthing": isthing,
                              "score": float(cur_scores[k])})
    return panoptic_seg, segments_info
