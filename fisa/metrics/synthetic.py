"""Synthetic ground truth / prediction pairs in the metrics' on-disk formats.

Used by the metric tests (random cases checked against a reference implementation) and by
`python -m fisa.bench.metrics`. The cases are built to hit every rule of the metrics: VOID
pixels, crowd regions, non-contiguous category ids, categories present only in the
predictions, categories present nowhere, predictions overlapping their ground truth by
IoU near the 0.5 match threshold.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from fisa.utils.panoptic_ids import id2rgb


def _random_box(rng: np.random.Generator, height: int, width: int, min_frac: float, max_frac: float):
    h = int(rng.uniform(min_frac, max_frac) * height) + 1
    w = int(rng.uniform(min_frac, max_frac) * width) + 1
    y = int(rng.integers(0, max(1, height - h)))
    x = int(rng.integers(0, max(1, width - w)))
    return y, x, h, w


def make_panoptic_categories(rng: np.random.Generator, num_categories: int = 12) -> list[dict]:
    """Categories with non-contiguous ids, at least two things and two stuff."""
    ids = sorted(rng.choice(np.arange(1, 250), size=num_categories, replace=False).tolist())
    isthing = [1, 1, 0, 0] + rng.integers(0, 2, size=num_categories - 4).tolist()
    rng.shuffle(isthing)
    return [{"id": int(i), "name": f"class_{i}", "isthing": int(t), "supercategory": "x"}
            for i, t in zip(ids, isthing)]


def write_panoptic_case(root: str | Path, num_images: int = 8, height: int = 48, width: int = 64,
                        seed: int = 0, num_categories: int = 12) -> dict:
    """Write a COCO-panoptic GT and a prediction under `root`; return their paths.

    Returns {"gt_json", "gt_dir", "pred_json", "pred_dir", "categories"}. The last category is
    never used (a class in neither), the second to last only in predictions.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    gt_dir, pred_dir = root / "gt", root / "pred"
    gt_dir.mkdir(parents=True, exist_ok=True)
    pred_dir.mkdir(parents=True, exist_ok=True)
    categories = make_panoptic_categories(rng, num_categories)
    cat_ids = [c["id"] for c in categories]
    gt_cats, pred_only_cat = cat_ids[:-2], cat_ids[-2]
    isthing = {c["id"]: c["isthing"] for c in categories}
    images, gt_anns, pred_anns = [], [], []
    for image_id in range(num_images):
        file_name = f"{image_id:012d}.png"
        gt_map = np.zeros((height, width), dtype=np.uint32)  # 0 = VOID
        pred_map = np.zeros((height, width), dtype=np.uint32)
        used_ids = set()

        def new_id():
            while True:
                i = int(rng.integers(1, 256 ** 3))
                if i not in used_ids:
                    used_ids.add(i)
                    return i

        # ground truth: boxes painted in order (later ones occlude), VOID where none is painted
        gt_boxes = []
        for k in range(int(rng.integers(3, 10))):
            cat = int(rng.choice(gt_cats))
            box = _random_box(rng, height, width, 0.15, 0.6)
            crowd = int(isthing[cat] == 1 and rng.random() < 0.15)
            if image_id == 0 and k == 0:  # every case has a crowd region
                cat, crowd = int(next(c for c in gt_cats if isthing[c] == 1)), 1
            seg_id = new_id()
            y, x, h, w = box
            gt_map[y:y + h, x:x + w] = seg_id
            gt_boxes.append((seg_id, cat, crowd, box))
        if image_id == 0 or rng.random() < 0.5:  # a VOID stripe over everything
            y, x, h, w = _random_box(rng, height, width, 0.05, 0.2)
            gt_map[y:y + h, :] = 0
        # prediction: each GT box shifted a little (IoU around the 0.5 threshold), sometimes relabelled
        pred_segments = []
        for _, cat, _, (y, x, h, w) in gt_boxes:
            if rng.random() < 0.15:
                continue  # missed
            dy, dx = (rng.normal(0, 0.25, size=2) * np.array([h, w])).astype(int)
            if rng.random() < 0.2:
                cat = int(rng.choice(cat_ids[:-1]))
            seg_id = new_id()
            y0, x0 = max(0, y + dy), max(0, x + dx)
            pred_map[y0:y0 + h, x0:x0 + w] = seg_id
            pred_segments.append((seg_id, cat))
        for k in range(int(rng.integers(1, 3))):  # spurious segments, some of a predicted-only class
            cat = pred_only_cat if (k == 0 or rng.random() < 0.5) else int(rng.choice(gt_cats))
            seg_id = new_id()
            y, x, h, w = _random_box(rng, height, width, 0.05, 0.3)
            pred_map[y:y + h, x:x + w] = seg_id
            pred_segments.append((seg_id, cat))
        if rng.random() < 0.3:  # predicted VOID
            y, x, h, w = _random_box(rng, height, width, 0.05, 0.3)
            pred_map[y:y + h, x:x + w] = 0

        gt_ids, gt_areas = np.unique(gt_map, return_counts=True)
        gt_area = dict(zip(gt_ids.tolist(), gt_areas.tolist()))
        gt_segments_info = [
            {"id": s, "category_id": c, "iscrowd": crowd, "area": int(gt_area[s]),
             "bbox": [0, 0, 1, 1]}
            for s, c, crowd, _ in gt_boxes if s in gt_area
        ]
        present = set(np.unique(pred_map).tolist())
        pred_segments_info = [{"id": s, "category_id": c} for s, c in pred_segments if s in present]
        Image.fromarray(id2rgb(gt_map)).save(gt_dir / file_name)
        Image.fromarray(id2rgb(pred_map)).save(pred_dir / file_name)
        images.append({"id": image_id, "file_name": file_name.replace(".png", ".jpg"),
                       "height": height, "width": width})
        gt_anns.append({"image_id": image_id, "file_name": file_name, "segments_info": gt_segments_info})
        pred_anns.append({"image_id": image_id, "file_name": file_name, "segments_info": pred_segments_info})
    gt_json, pred_json = root / "gt.json", root / "pred.json"
    gt_json.write_text(json.dumps({"images": images, "annotations": gt_anns, "categories": categories}))
    pred_json.write_text(json.dumps({"annotations": pred_anns}))
    return {"gt_json": gt_json, "gt_dir": gt_dir, "pred_json": pred_json, "pred_dir": pred_dir,
            "categories": categories}


def random_semantic_pair(rng: np.random.Generator, num_classes: int, ignore_label: int,
                         height: int = 48, width: int = 64, noise: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """A (pred, gt) pair of int label maps [H, W] with ignore pixels, boxes and noise.

    Only the lower half of the classes appears in the GT, so some classes are only
    predicted and some appear nowhere (the cases where the averaging rules differ). `noise` is
    the share of prediction pixels set to a random class.
    """
    gt = np.full((height, width), int(rng.integers(0, max(1, num_classes // 2))), dtype=np.int64)
    for _ in range(int(rng.integers(2, 8))):
        y, x, h, w = _random_box(rng, height, width, 0.1, 0.5)
        gt[y:y + h, x:x + w] = int(rng.integers(0, max(1, num_classes // 2)))
    y, x, h, w = _random_box(rng, height, width, 0.05, 0.3)
    gt[y:y + h, x:x + w] = ignore_label
    pred = np.where(gt == ignore_label, rng.integers(0, num_classes, size=gt.shape), gt)
    noise = rng.random(gt.shape) < noise
    pred[noise] = rng.integers(0, num_classes, size=int(noise.sum()))
    y, x, h, w = _random_box(rng, height, width, 0.05, 0.3)
    pred[y:y + h, x:x + w] = int(rng.integers(0, num_classes))
    return pred, gt
