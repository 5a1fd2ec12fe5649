"""The COCO panoptic PNG encoding of segment ids (panopticapi's): id = R + 256 G + 256^2 B.

The one codec of the project: dataset preparation and loading, the synthetic stand-ins,
evaluation (prediction PNGs) and the PQ metric all read and write panoptic PNGs through it.
"""
from __future__ import annotations

import numpy as np


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids [H, W] (non-negative, < 256^3) -> RGB uint8 [H, W, 3]."""
    ids = np.asarray(ids).astype(np.uint32)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """RGB [H, W, 3] -> segment ids uint32 [H, W] (the inverse of id2rgb)."""
    rgb = np.asarray(rgb).astype(np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
