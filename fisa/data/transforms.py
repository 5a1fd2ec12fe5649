"""Training / evaluation transforms on dataset items, with torchvision transforms v2 kernels.

Items are the dicts of `fisa.data.datasets`: `image` uint8 [3,H,W] and any of `masks`
bool [N,H,W], `sem_seg` int64 [H,W], `mask` bool [H,W] (referring). Geometric ops go
through `torchvision.transforms.v2.functional` on `tv_tensors` (Image: bilinear; Mask:
nearest), so image and every label move together.

- `train_transform(crop_size, scale_range)`: large-scale jitter as Mask2Former's COCO recipe
  (detectron2 `ResizeScale` + `FixedSizeCrop` + `RandomFlip`): resize so the image fits a
  (s*crop) x (s*crop) box, s ~ U(scale_range), random crop to crop x crop, pad the rest
  (image 128, masks 0, sem_seg the ignore label), horizontal flip with p=0.5; masks left
  empty by the crop are dropped (with their labels/iscrowd).
- `eval_transform(min_size, max_size)`: detectron2 `ResizeShortestEdge` (the Mask R-CNN test
  setting): shorter side to min_size unless the longer would exceed max_size.

Randomness comes from torch's global RNG, so the engine's per-sample seeding makes the
augmentation reproducible.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

IMAGE_PAD = 128  # detectron2 FixedSizeCrop's pad_value
_MASK_KEYS = ("masks", "mask")


def _spatial(item: dict) -> dict:
    """The item's spatial tensors wrapped as tv_tensors (image -> Image, labels -> Mask)."""
    out = {"image": tv_tensors.Image(item["image"])}
    for k in (*_MASK_KEYS, "sem_seg"):
        if k in item:
            out[k] = tv_tensors.Mask(item[k])
    return out


def _unwrap(item: dict, spatial: dict) -> dict:
    out = dict(item)
    for k, v in spatial.items():
        out[k] = v.as_subclass(torch.Tensor)
    return out


def _resize(spatial: dict, size: tuple[int, int]) -> dict:
    out = {}
    for k, v in spatial.items():
        if k == "image":
            out[k] = F.resize(v, list(size), antialias=True)
        else:
            # NEAREST_EXACT samples pixel centres like the bilinear image resize (and PIL's NEAREST,
            # which detectron2 uses); torch's legacy "nearest" shifts labels by up to half a pixel.
            # bool is not supported by every kernel: go through uint8.
            x = tv_tensors.Mask(v.to(torch.uint8)) if v.dtype == torch.bool else v
            x = F.resize(x, list(size), interpolation=InterpolationMode.NEAREST_EXACT)
            out[k] = tv_tensors.Mask(x.bool()) if v.dtype == torch.bool else x
    return out


def _drop_empty(item: dict) -> dict:
    if "masks" in item and item["masks"].ndim == 3:
        keep = item["masks"].flatten(1).any(1)
        if not bool(keep.all()):
            for k in ("masks", "labels", "iscrowd"):
                if k in item:
                    item[k] = item[k][keep]
    return item


def scaled_size(h: int, w: int, target_h: float, target_w: float) -> tuple[int, int]:
    """The size that fits (h, w) into a target box keeping the aspect ratio (detectron2 ResizeScale)."""
    scale = min(target_h / h, target_w / w)
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


def shortest_edge_size(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    """detectron2 ResizeShortestEdge.get_output_shape: shorter side -> min_size, longer <= max_size."""
    scale = min_size / min(h, w)
    if max(h, w) * scale > max_size:
        scale = max_size / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


class LargeScaleJitter:
    """Resize by s ~ U(scale_range) of the crop size, random crop/pad to crop_size, random h-flip."""

    def __init__(self, crop_size: int, scale_range: Sequence[float] = (0.1, 2.0), ignore_label: int = 255,
                 flip_prob: float = 0.5):
        lo, hi = float(scale_range[0]), float(scale_range[1])
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < min <= max, got {tuple(scale_range)}")
        if int(crop_size) <= 0:
            raise ValueError(f"crop_size must be positive, got {crop_size}")
        self.crop, self.lo, self.hi = int(crop_size), lo, hi
        self.ignore_label, self.flip_prob = int(ignore_label), float(flip_prob)

    def __call__(self, item: dict) -> dict:
        sp = _spatial(item)
        h, w = sp["image"].shape[-2:]
        s = self.lo + (self.hi - self.lo) * float(torch.rand(()))
        nh, nw = scaled_size(h, w, s * self.crop, s * self.crop)
        sp = _resize(sp, (nh, nw))
        # Random crop offset inside the resized image (0 where it is already smaller than the crop).
        top = int(torch.randint(0, max(nh - self.crop, 0) + 1, ()))
        left = int(torch.randint(0, max(nw - self.crop, 0) + 1, ()))
        ch, cw = min(self.crop, nh), min(self.crop, nw)
        pad = [0, 0, self.crop - cw, self.crop - ch]  # left, top, right, bottom: pad bottom/right as detectron2
        out = {}
        for k, v in sp.items():
            v = F.crop(v, top, left, ch, cw)
            if pad[2] or pad[3]:
                fill = IMAGE_PAD if k == "image" else (self.ignore_label if k == "sem_seg" else 0)
                if v.dtype == torch.bool:
                    v = tv_tensors.Mask(F.pad(tv_tensors.Mask(v.to(torch.uint8)), pad, fill=fill).bool())
                else:
                    v = F.pad(v, pad, fill=fill)
            out[k] = v
        if float(torch.rand(())) < self.flip_prob:
            out = {k: F.horizontal_flip(v) for k, v in out.items()}
        return _drop_empty(_unwrap(item, out))


class ResizeShortestEdge:
    """Deterministic test-time resize (shorter side to min_size, longer side at most max_size)."""

    def __init__(self, min_size: int, max_size: int):
        if int(min_size) <= 0 or int(max_size) < int(min_size):
            raise ValueError(f"need 0 < min_size <= max_size, got {min_size}, {max_size}")
        self.min_size, self.max_size = int(min_size), int(max_size)

    def __call__(self, item: dict) -> dict:
        sp = _spatial(item)
        h, w = sp["image"].shape[-2:]
        size = shortest_edge_size(h, w, self.min_size, self.max_size)
        if size != (h, w):
            sp = _resize(sp, size)
        return _drop_empty(_unwrap(item, sp))


def train_transform(crop_size: int, scale_range: Sequence[float] = (0.1, 2.0), ignore_label: int = 255):
    """Large-scale jitter for training (see LargeScaleJitter)."""
    return LargeScaleJitter(crop_size, scale_range, ignore_label)


def eval_transform(min_size: int, max_size: int):
    """Shorter side to `min_size`, longer side at most `max_size` (see ResizeShortestEdge)."""
    return ResizeShortestEdge(min_size, max_size)


def collate(items: list[dict]) -> dict:
    """A batch from dataset items: `images` float [B,3,H,W] (0..255, zero-padded to the largest
    size, as detectron2's ImageList), `image_sizes`, `targets` list of {labels, masks (padded
    likewise)} without crowd segments, and the other per-item fields as lists (`image_id`,
    `file_name`, `iscrowd`, `sem_seg`, ...)."""
    if not items:
        raise ValueError("collate: empty batch")
    H = max(int(it["image"].shape[-2]) for it in items)
    W = max(int(it["image"].shape[-1]) for it in items)
    images = torch.zeros(len(items), 3, H, W, dtype=torch.float32)
    targets = []
    for b, it in enumerate(items):
        h, w = it["image"].shape[-2:]
        images[b, :, :h, :w] = it["image"].float()
        if "masks" in it:
            # Crowd regions are not training targets (Mask2Former's panoptic dataset mapper skips them).
            keep = ~it["iscrowd"] if "iscrowd" in it else torch.ones(len(it["labels"]), dtype=torch.bool)
            m = it["masks"][keep]
            pm = torch.zeros(m.shape[0], H, W, dtype=torch.bool)
            pm[:, :h, :w] = m
            targets.append({"labels": it["labels"][keep], "masks": pm})
    batch = {"images": images, "image_sizes": [tuple(it["image"].shape[-2:]) for it in items]}
    if len(targets) == len(items):
        batch["targets"] = targets
    for k in items[0]:
        if k not in ("image", "labels", "masks"):
            batch[k] = [it.get(k) for it in items]
    return batch
