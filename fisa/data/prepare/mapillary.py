"""Mapillary Vistas v1.2 (65 classes): no conversion, as in Mask2Former/FC-CLIP; we check it.

Expected (Mask2Former's layout): `mapillary_vistas/<split>/{images,labels,panoptic}` with
`panoptic/panoptic_2018.json`; `labels/*.png` hold 0..64 with 65 = unlabelled (the
loader's ignore label), `panoptic/*.png` the COCO-style RGB id encoding.

The v2.0 research-edition archive holds both label versions (`<split>/v1.2/...` and
`<split>/v2.0/...`, images shared); from it we move the v1.2 label folders into place,
so either archive gives the same tree. A tree with v2.0 labels only (124 classes) is
refused: the paper reports v1.2.
"""
from __future__ import annotations

import os
from pathlib import Path

from .common import PrepareError, check_pairs, load_json, require

BASE = "mapillary_vistas"
LABEL_DIRS = ("instances", "labels", "panoptic")


def _splits(all_splits: bool) -> tuple[str, ...]:
    return ("validation", "training") if all_splits else ("validation",)


def adopt_v12_from_v20(split_dir: Path) -> bool:
    """Move `<split>/v1.2/{instances,labels,panoptic}` up to `<split>/` (v2.0 archive); True if moved."""
    v12 = split_dir / "v1.2"
    if (split_dir / "panoptic" / "panoptic_2018.json").exists() or not v12.is_dir():
        return False
    for name in LABEL_DIRS:
        if (v12 / name).exists() and not (split_dir / name).exists():
            os.replace(v12 / name, split_dir / name)
    return True


def hoist_single_top_folder(base: Path) -> bool:
    """If the archive had one top folder (`mapillary_vistas/<x>/validation`), move its content up."""
    if not base.is_dir() or (base / "validation").exists():
        return False
    subdirs = [d for d in base.iterdir() if d.is_dir() and (d / "validation").is_dir()]
    if len(subdirs) != 1:
        return False
    for entry in list(subdirs[0].iterdir()):
        if not (base / entry.name).exists():
            os.replace(entry, base / entry.name)
    return True


def prepare(root: Path, workers: int | None = None, all_splits: bool = False) -> dict:
    """Put the v1.2 labels in place if they come from the v2.0 archive, then validate."""
    hoist_single_top_folder(root / BASE)
    for split in _splits(all_splits):
        split_dir = require(root / BASE / split, "Mapillary Vistas split folder",
                            "python -m fisa.data.download --dataset mapillary explains where to put the archive")
        adopt_v12_from_v20(split_dir)
    return validate(root, all_splits)


def validate(root: Path, all_splits: bool = False) -> dict:
    """Images, semantic labels and panoptic PNGs pair up; the panoptic JSON is v1.2 and complete."""
    summary = {}
    for split in _splits(all_splits):
        d = root / BASE / split
        n = check_pairs(d / "images", d / "labels", ".jpg", ".png", f"Mapillary Vistas {split} semantic")
        pan_json = require(d / "panoptic" / "panoptic_2018.json", "Mapillary Vistas panoptic JSON",
                           "v1.2 labels; the v2.0 archive's are under <split>/v1.2/")
        pan = load_json(pan_json)
        cats = pan.get("categories", [])
        if len(cats) > 66:
            raise PrepareError(f"{pan_json}: {len(cats)} categories: these are v2.0 labels; the benchmark is v1.2 "
                               "(65 classes)")
        missing = [a["file_name"] for a in pan.get("annotations", []) if not (d / "panoptic" / a["file_name"]).exists()]
        if missing:
            raise PrepareError(f"Mapillary Vistas {split}: {len(missing)} panoptic PNGs listed in {pan_json} are "
                               f"missing, e.g. {missing[:3]}")
        if len(pan.get("annotations", [])) != n:
            raise PrepareError(f"Mapillary Vistas {split}: {pan_json} lists {len(pan.get('annotations', []))} images, "
                               f"{d / 'images'} holds {n}")
        summary[split] = {"images": n, "panoptic_categories": len(cats),
                          "things": sum(int(c.get("isthing", 0)) for c in cats)}
    return summary
