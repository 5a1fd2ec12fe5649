"""ADE20K-150 (ADEChallengeData2016): semantic labels and panoptic JSON + PNGs.

Semantic (as Mask2Former's `prepare_ade20k_sem_seg.py`): `annotations/<split>/*.png`
(0 = other, 1..150) minus one in uint8 arithmetic, so 0 becomes 255 (ignore) and the
classes 0..149 -> `annotations_detectron2/<split>/*.png`.

Panoptic (as Mask2Former's `prepare_ade20k_pan_seg.py`), from the semantic PNG and the
2017 instance annotation (`annotations_instance/<split>/*.png`: R = instance-challenge
class 1..100, G = instance index, 0 = none):
- a class is a thing iff some instance class maps to it (`ade20k_instance_catid_mapping.txt`);
- stuff segments first, one per stuff class present in the semantic map, with area and
  bbox measured on the semantic mask *before* things are pasted (the reference does so,
  and PQ reads GT areas from the JSON, so we keep it);
- then one thing segment per instance index, its class mapped from the instance class,
  pasted over whatever was there; pixels of thing classes without an instance stay VOID.
Categories are ids 0..149 (`isthing` as above); `image_id` is the file stem.

Choice (the reference is silent/random here): the reference draws segment ids from
panopticapi's IdGenerator, which jitters colours with an unseeded RNG, so its ids are
not reproducible. We use `(category_id + 1) * 1000 + instance_index` (0 for stuff):
unique, non-zero, deterministic. PQ does not depend on segment ids.
"""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from fisa.utils.panoptic_ids import id2rgb

from .common import (PrepareError, check_pairs, load_json, mask_bbox, parallel_map, read_image, require,
                     save_png, write_json)

log = logging.getLogger("fisa.data.prepare.ade150")

SPLITS = (("val", "validation"), ("train", "training"))
BASE = "ADEChallengeData2016"
MAPPING_FILE = "ade20k_instance_catid_mapping.txt"


def load_instance_mapping(path: Path) -> dict[int, int]:
    """Instance class (0-based) -> ADE-150 class (0-based), from the reference's mapping table."""
    require(path, "ADE instance->semantic class mapping", "fetched by: python -m fisa.data.download --dataset ade150")
    mapping = {}
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines[1:], start=2):  # first line is a header
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
            raise PrepareError(f"{path}:{n}: expected '<instance id> <semantic id> <name>', got {line!r}")
        mapping[int(parts[0]) - 1] = int(parts[1]) - 1
    if not mapping:
        raise PrepareError(f"{path}: no mapping rows")
    return mapping


def class_names(root: Path, n: int = 150) -> list[str]:
    """Names from the release's objectInfo150.txt when present (else class_<i>); JSON display only."""
    info = root / BASE / "objectInfo150.txt"
    names = [f"class_{i}" for i in range(n)]
    if info.exists():
        for line in info.read_text().splitlines()[1:]:
            cols = line.split("\t")
            if len(cols) >= 5 and cols[0].strip().isdigit() and 1 <= int(cols[0]) <= n:
                names[int(cols[0]) - 1] = cols[4].strip()
    return names


def categories(root: Path, thing_ids: set[int]) -> list[dict]:
    """The panoptic JSON's categories: id 0..149, name, isthing, a fixed display colour."""
    rng = np.random.default_rng(0)  # display colours only; fixed so the JSON is reproducible
    colors = rng.integers(0, 256, size=(150, 3))
    return [{"id": i, "name": name, "isthing": int(i in thing_ids), "color": [int(c) for c in colors[i]]}
            for i, name in enumerate(class_names(root))]


def semantic_from_annotation(ann: np.ndarray) -> np.ndarray:
    """ADE annotation PNG (0 = other, 1..150) -> detectron2 labels (0..149, 255 ignore)."""
    if ann.dtype != np.uint8 or ann.ndim != 2:
        raise PrepareError(f"expected a uint8 (H,W) ADE annotation, got {ann.dtype} {ann.shape}")
    return ann - np.uint8(1)  # uint8 wrap-around: 0 -> 255


def panoptic_from_annotations(sem: np.ndarray, ins: np.ndarray, mapping: dict[int, int],
                              thing_ids: set[int], where: str = "") -> tuple[np.ndarray, list[dict]]:
    """Semantic (H,W) + instance (H,W,3) ADE PNGs -> (segment id map uint32 (H,W), segments_info)."""
    if ins.ndim != 3 or ins.shape[:2] != sem.shape:
        raise PrepareError(f"{where}: instance PNG shape {ins.shape} does not match semantic {sem.shape}")
    sem_ids = sem - np.uint8(1)
    ins_cls = ins[..., 0] - np.uint8(1)
    ins_idx = ins[..., 1]
    pan = np.zeros(sem.shape, dtype=np.uint32)
    segments = []
    for cat in np.unique(sem_ids):
        cat = int(cat)
        if cat == 255 or cat in thing_ids:
            continue
        mask = sem_ids == cat
        seg_id = (cat + 1) * 1000
        pan[mask] = seg_id
        segments.append({"id": seg_id, "category_id": cat, "area": int(mask.sum()), "bbox": mask_bbox(mask),
                         "iscrowd": 0})
    for idx in np.unique(ins_idx):
        idx = int(idx)
        if idx == 0:
            continue
        mask = ins_idx == idx
        classes = np.unique(ins_cls[mask])
        if len(classes) != 1:
            raise PrepareError(f"{where}: instance {idx} spans instance classes {[int(c) + 1 for c in classes]}")
        if int(classes[0]) not in mapping:
            raise PrepareError(f"{where}: instance {idx} has instance class {int(classes[0]) + 1}, "
                               "which the mapping table does not list")
        cat = mapping[int(classes[0])]
        seg_id = (cat + 1) * 1000 + idx
        pan[mask] = seg_id
        segments.append({"id": seg_id, "category_id": cat, "area": int(mask.sum()), "bbox": mask_bbox(mask),
                         "iscrowd": 0})
    return pan, segments


def _semantic_one(name: str, src_dir: Path, dst_dir: Path) -> None:
    dst = dst_dir / name
    if not dst.exists():
        save_png(semantic_from_annotation(read_image(src_dir / name)), dst)


def _panoptic_one(stem: str, image_dir: Path, sem_dir: Path, ins_dir: Path, out_dir: Path,
                  mapping: dict[int, int], thing_ids: set[int]) -> tuple[dict, dict]:
    image_file = image_dir / f"{stem}.jpg"
    with Image.open(image_file) as im:
        width, height = im.size
    sem_file = require(sem_dir / f"{stem}.png", "ADE-150 semantic annotation")
    ins_file = require(ins_dir / f"{stem}.png", "ADE-150 instance annotation",
                       "from annotations_instance.tar; python -m fisa.data.download --dataset ade150")
    sem, ins = read_image(sem_file), read_image(ins_file)
    if sem.dtype != np.uint8 or ins.dtype != np.uint8:
        raise PrepareError(f"{sem_file} / {ins_file}: expected 8-bit PNGs")
    pan, segments = panoptic_from_annotations(sem, ins, mapping, thing_ids, where=str(ins_file))
    # Always (re)written: a PNG left by another tool (FC-CLIP's random segment ids) or an
    # interrupted run must agree with the JSON written at the end of this split.
    save_png(id2rgb(pan), out_dir / f"{stem}.png")
    image = {"id": stem, "file_name": f"{stem}.jpg", "width": width, "height": height}
    return image, {"image_id": stem, "file_name": f"{stem}.png", "segments_info": segments}


def _splits(all_splits: bool):
    return SPLITS if all_splits else SPLITS[:1]


def prepare(root: Path, workers: int | None = None, all_splits: bool = False) -> dict:
    """Semantic + panoptic ADE-150 for validation (and training with all_splits); returns the summary.

    Raw inputs (and the mapping table) are only needed for what is missing, so a tree
    prepared elsewhere is completed without them.
    """
    splits = _splits(all_splits)
    base = root / BASE
    mapping = None
    for name, dirname in splits:
        image_dir = require(base / "images" / dirname, "ADE-150 image folder")
        stems = sorted(p.stem for p in image_dir.glob("*.jpg"))
        sem_out = base / "annotations_detectron2" / dirname
        sem_out.mkdir(parents=True, exist_ok=True)
        todo = [f"{s}.png" for s in stems if not (sem_out / f"{s}.png").exists()]
        if todo:
            sem_dir = require(base / "annotations" / dirname, "ADE-150 annotation folder")
            parallel_map(partial(_semantic_one, src_dir=sem_dir, dst_dir=sem_out), todo, workers)

        pan_json = base / f"ade20k_panoptic_{name}.json"
        if pan_json.exists():
            continue  # written last, after every PNG of the split: this split is complete (validated below)
        if mapping is None:
            mapping = load_instance_mapping(root / "downloads" / MAPPING_FILE)
        thing_ids = set(mapping.values())
        sem_dir = require(base / "annotations" / dirname, "ADE-150 annotation folder")
        ins_dir = require(base / "annotations_instance" / dirname, "ADE-150 instance annotation folder",
                          "from annotations_instance.tar")
        pan_out = base / f"ade20k_panoptic_{name}"
        pan_out.mkdir(parents=True, exist_ok=True)
        results = parallel_map(partial(_panoptic_one, image_dir=image_dir, sem_dir=sem_dir, ins_dir=ins_dir,
                                       out_dir=pan_out, mapping=mapping, thing_ids=thing_ids), stems, workers)
        # The JSON is written last: its presence means every PNG of the split is there.
        write_json(pan_json, {"images": [r[0] for r in results], "annotations": [r[1] for r in results],
                              "categories": categories(root, thing_ids)})
    summary = validate(root, all_splits)
    val_json = load_json(base / f"ade20k_panoptic_{splits[0][0]}.json")
    summary["things_match_registry"] = things_match_registry(
        {int(c["id"]) for c in val_json["categories"] if c.get("isthing")})
    return summary


def things_match_registry(thing_ids: set[int]) -> bool | None:
    """Whether the mapping's thing classes are the registry's (None if the registry is unavailable).

    The panoptic JSON's `isthing` (PQ Things/Stuff) comes from the mapping table, the model's
    panoptic inference from the registry: a mismatch is logged loudly and recorded in the marker.
    """
    try:
        from fisa.data.registry import get_meta

        registry_things = {i for i, t in enumerate(get_meta("ade150").thing) if t}
    except Exception:  # noqa: BLE001 - the registry is optional for preparing data
        return None
    if registry_things != thing_ids:
        log.warning("ADE-150: the instance mapping's %d thing classes differ from the registry's %d "
                    "(only in mapping: %s; only in registry: %s)", len(thing_ids), len(registry_things),
                    sorted(thing_ids - registry_things)[:10], sorted(registry_things - thing_ids)[:10])
        return False
    return True


def validate(root: Path, all_splits: bool = False) -> dict:
    """Check images, semantic labels and panoptic JSON/PNGs pair up; return counts."""
    splits = _splits(all_splits)
    base = root / BASE
    summary = {}
    for name, dirname in splits:
        n_sem = check_pairs(base / "images" / dirname, base / "annotations_detectron2" / dirname, ".jpg", ".png",
                            f"ADE-150 {dirname} semantic")
        pan = load_json(require(base / f"ade20k_panoptic_{name}.json", "ADE-150 panoptic JSON"))
        pan_dir = base / f"ade20k_panoptic_{name}"
        missing = [a["file_name"] for a in pan["annotations"] if not (pan_dir / a["file_name"]).exists()]
        if missing:
            raise PrepareError(f"ADE-150 {dirname}: {len(missing)} panoptic PNGs missing in {pan_dir}, e.g. {missing[:3]}")
        if len(pan["annotations"]) != n_sem:
            raise PrepareError(f"ADE-150 {dirname}: panoptic JSON has {len(pan['annotations'])} images, "
                               f"the image folder {n_sem}")
        if len(pan["categories"]) != 150:
            raise PrepareError(f"ADE-150 {dirname}: panoptic JSON has {len(pan['categories'])} categories, expected 150")
        summary[dirname] = {"images": n_sem, "panoptic_annotations": len(pan["annotations"]),
                            "things": sum(c["isthing"] for c in pan["categories"])}
    return summary
