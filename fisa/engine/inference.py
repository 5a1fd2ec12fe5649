"""Inference on one image at the paper's test resolution, shared by evaluation and efficiency.

The image is resized so its shorter side is `min_size` with the longer side at most
`max_size` (the Mask R-CNN setting the paper uses: 800 / 1333), the model runs, and the
mask logits are upsampled back to the original resolution before post-processing, so
predictions align with the ground truth pixel for pixel.
"""
from __future__ import annotations

import torch
from torchvision.transforms.v2 import functional as TF

from fisa.models.postprocess import panoptic_inference, semantic_inference, upsample_mask_logits

# Classes per chunk when taking the semantic argmax: [C, H, W] at full resolution for 847
# classes is >1 GB, so the per-class scores are reduced chunk by chunk.
_CLASS_CHUNK = 128


def resize_for_inference(image: torch.Tensor, min_size: int, max_size: int) -> torch.Tensor:
    """uint8 [3, H, W] -> float [3, h, w] in 0..255, shorter side `min_size`, longer <= `max_size`.

    torchvision's `resize(size=[s], max_size=m)` is exactly detectron2's ResizeShortestEdge.
    """
    h, w = image.shape[-2:]
    scale = min(min_size / min(h, w), max_size / max(h, w))
    size = [max(1, round(h * scale)), max(1, round(w * scale))]
    return TF.resize(image, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True).float()


def semantic_argmax(mask_logits: torch.Tensor, class_logits: torch.Tensor) -> torch.Tensor:
    """Semantic labels int64 [H, W] from mask_logits [Q, H, W] and class_logits [Q, C+1],
    equal to `semantic_inference(...).argmax(0)` but without the full [C, H, W] tensor."""
    num_classes = class_logits.shape[-1] - 1
    if num_classes <= _CLASS_CHUNK:
        return semantic_inference(mask_logits, class_logits).argmax(0)
    probs = class_logits.float().softmax(-1)[:, :-1]  # [Q, C]
    masks = mask_logits.float().sigmoid()
    best = torch.full(masks.shape[-2:], -1.0, device=masks.device)
    label = torch.zeros(masks.shape[-2:], dtype=torch.int64, device=masks.device)
    for c0 in range(0, num_classes, _CLASS_CHUNK):
        scores = torch.einsum("qc,qhw->chw", probs[:, c0:c0 + _CLASS_CHUNK], masks)
        val, idx = scores.max(0)
        better = val > best  # strict: ties keep the lower class id, as argmax does
        best = torch.where(better, val, best)
        label = torch.where(better, idx + c0, label)
    return label


@torch.no_grad()
def run_model(model, image: torch.Tensor, vocabulary: torch.Tensor, min_size: int, max_size: int,
              targets: list[dict] | None = None) -> dict:
    """One image through the model. Returns `mask_logits` [Q, H, W] at the ORIGINAL size and
    `class_logits` [Q, C+1]. `targets` (ground truth) only for the oracle variants."""
    device = vocabulary.device
    h, w = image.shape[-2:]
    x = resize_for_inference(image.to(device), min_size, max_size)[None]  # [1,3,h',w']
    kwargs = {"targets": targets} if targets is not None else {}
    out = model(x, vocabulary, **kwargs)
    return {"mask_logits": upsample_mask_logits(out["mask_logits"][0], (h, w)),
            "class_logits": out["class_logits"][0].float()}


def predict(outputs: dict, tasks, is_thing: list[bool], eval_cfg: dict) -> dict:
    """Post-process `run_model` outputs: {"semantic": int64 [H, W]} and/or
    {"panoptic": (int32 [H, W], segments_info)} for the requested tasks."""
    res = {}
    if "semantic" in tasks:
        res["semantic"] = semantic_argmax(outputs["mask_logits"], outputs["class_logits"])
    if "panoptic" in tasks:
        res["panoptic"] = panoptic_inference(
            outputs["mask_logits"], outputs["class_logits"], is_thing,
            object_mask_threshold=float(eval_cfg["object_mask_threshold"]),
            overlap_threshold=float(eval_cfg["overlap_threshold"]))
    return res


@torch.no_grad()
def referring_masks(model, image: torch.Tensor, expressions: list[str], min_size: int, max_size: int) -> torch.Tensor:
    """Zero-shot referring segmentation (SPEC Tab. 3f): each expression is a text query over
    the generator's proposals; the proposal scoring highest for it is its mask.
    Returns bool [E, H, W] at the original size.

    All of an image's expressions form one vocabulary (one forward pass); the score of
    proposal q for expression e is its class logit (scaled cosine similarity), which
    ranks proposals exactly as the cosine does."""
    vocabulary = model.encode_vocabulary([[e] for e in expressions])
    out = run_model(model, image, vocabulary, min_size, max_size)
    best = out["class_logits"][:, :-1].argmax(0)  # [E]
    return out["mask_logits"][best] > 0
