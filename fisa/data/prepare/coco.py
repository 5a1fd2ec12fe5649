"""COCO panoptic: semantic labels from the panoptic annotations (Mask2Former/FC-CLIP `panoptic_semseg`).

As `prepare_coco_semantic_annos_from_panoptic_annos.py`: every segment listed in the
JSON (crowd segments included) is painted with its category's contiguous index, the
category order being ascending category id (133 classes -> 0..132); pixels of no
listed segment (VOID) are 255. Output: `coco/panoptic_semseg_<split>/<file_name>.png`.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from fisa.utils.panoptic_ids import rgb2id

from .common import PrepareError, count_files, load_json, parallel_map, read_image, require, save_png

SPLITS = ("val2017", "train2017")


def contiguous_id_map(categories: list[dict]) -> dict[int, int]:
    """Category id -> contiguous index in ascending id order (detectron2's COCO_CATEGORIES order)."""
    ids = sorted(int(c["id"]) for c in categories)
    if len(ids) != len(set(ids)):
        raise PrepareError("panoptic JSON: duplicate category ids")
    if len(ids) > 255:
        raise PrepareError(f"panoptic JSON: {len(ids)} categories do not fit an 8-bit label map with 255 = ignore")
    return {cid: i for i, cid in enumerate(ids)}


def panoptic_to_semantic(panoptic_rgb: np.ndarray, segments: list[dict], id_map: dict[int, int]) -> np.ndarray:
    """(H,W,3) panoptic PNG + its segments_info -> (H,W) uint8 semantic map (255 = VOID)."""
    ids = rgb2id(panoptic_rgb)
    out = np.full(ids.shape, 255, dtype=np.uint8)
    for seg in segments:
        out[ids == seg["id"]] = id_map[seg["category_id"]]
    return out


def _convert_one(item: tuple[str, list[dict]], pan_dir: Path, out_dir: Path, id_map: dict[int, int]) -> None:
    file_name, segments = item
    dst = out_dir / file_name
    if dst.exists():  # written atomically by an earlier (interrupted) run
        return
    src = pan_dir / file_name
    if not src.exists():
        raise PrepareError(f"panoptic PNG listed in the JSON is missing: {src}")
    rgb = read_image(src)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise PrepareError(f"{src}: expected an RGB panoptic PNG, got shape {rgb.shape}")
    for seg in segments:
        if seg["category_id"] not in id_map:
            raise PrepareError(f"{src}: segment {seg['id']} has category_id {seg['category_id']} "
                               "not in the JSON's categories")
    save_png(panoptic_to_semantic(rgb[..., :3], segments, id_map), dst)


def prepare(root: Path, workers: int | None = None, all_splits: bool = True) -> dict:
    """Write `panoptic_semseg_<split>` for train2017 and val2017 (both used); returns the summary."""
    splits = SPLITS
    coco = root / "coco"
    for split in splits:
        gt = load_json(require(coco / "annotations" / f"panoptic_{split}.json", "COCO panoptic JSON"))
        id_map = contiguous_id_map(gt["categories"])
        pan_dir = require(coco / f"panoptic_{split}", "COCO panoptic PNG folder")
        out_dir = coco / f"panoptic_semseg_{split}"
        out_dir.mkdir(parents=True, exist_ok=True)
        items = [(a["file_name"], a["segments_info"]) for a in gt["annotations"]]
        parallel_map(partial(_convert_one, pan_dir=pan_dir, out_dir=out_dir, id_map=id_map), items, workers)
    return validate(root)


def validate(root: Path, all_splits: bool = True) -> dict:
    """Check the prepared COCO tree (images, panoptic JSON + PNGs, semantic PNGs); return counts."""
    splits = SPLITS
    coco = root / "coco"
    summary = {}
    for split in splits:
        gt = load_json(require(coco / "annotations" / f"panoptic_{split}.json", "COCO panoptic JSON"))
        names = {a["file_name"] for a in gt["annotations"]}
        img_dir = require(coco / split, "COCO image folder")
        missing_img = [im["file_name"] for im in gt["images"] if not (img_dir / im["file_name"]).exists()]
        if missing_img:
            raise PrepareError(f"COCO {split}: {len(missing_img)} images listed in the JSON are missing from "
                               f"{img_dir}, e.g. {missing_img[:3]}")
        for folder in (coco / f"panoptic_{split}", coco / f"panoptic_semseg_{split}"):
            missing = [n for n in names if not (folder / n).exists()]
            if missing:
                raise PrepareError(f"COCO {split}: {len(missing)} of {len(names)} PNGs missing in {folder}, "
                                   f"e.g. {sorted(missing)[:3]}")
        summary[split] = {"images": len(gt["images"]), "annotations": len(names),
                          "categories": len(gt["categories"]),
                          "semseg_pngs": count_files(coco / f"panoptic_semseg_{split}", ".png")}
    return summary

