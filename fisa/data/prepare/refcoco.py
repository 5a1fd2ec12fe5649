"""RefCOCO / RefCOCO+ (UNC splits): the refer toolkit's files, checked against COCO train2014.

Layout (as `refer`'s `data/` folder): `refcoco/<refcoco|refcoco+>/refs(unc).p` (pickled list
of refs: ref_id, ann_id, image_id, split, sentences, ...) and `instances.json` (COCO-style
images/annotations with polygon masks), images in `coco/train2014/`. Nothing is converted;
prepare checks that every ref resolves to an annotation and an image file, and that every
evaluation-split mask decodes to a non-empty mask, so evaluation never meets a dangling ref.
"""
from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

from fisa.utils import safe_pickle

from .common import PrepareError, load_json, require

FOLDERS = {"refcoco": "refcoco", "refcocoplus": "refcoco+"}
EVAL_SPLITS = ("val",)


def load_refs(path: Path) -> list[dict]:
    """Read `refs(unc).p` (a Python 2 pickle: bytes decoded as latin-1 if not ASCII)."""
    require(path, "referring expressions pickle")
    for kwargs in ({}, {"encoding": "latin1"}):
        try:
            refs = safe_pickle.load(path, **kwargs)  # downloaded: data types only, never code
            break
        except UnicodeDecodeError:
            continue
        except safe_pickle.UnsafePickleError as e:
            raise PrepareError(str(e)) from None
        except (pickle.UnpicklingError, EOFError, ValueError) as e:
            raise PrepareError(f"{path}: not a readable refs pickle: {e}") from None
    if not isinstance(refs, list) or not refs or not isinstance(refs[0], dict):
        raise PrepareError(f"{path}: expected a non-empty list of ref dicts")
    return refs


def _decode_nonempty(ann: dict, image: dict) -> bool:
    from pycocotools import mask as mask_utils

    seg = ann["segmentation"]
    h, w = image["height"], image["width"]
    if isinstance(seg, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        rle = seg
    return int(mask_utils.area(rle)) > 0


def validate(root: Path, name: str, all_splits: bool = False) -> dict:
    """Check refs, instances and train2014 images for `name`; return per-split counts."""
    folder = root / "refcoco" / FOLDERS[name]
    refs = load_refs(folder / "refs(unc).p")
    inst = load_json(require(folder / "instances.json", "refer instances JSON"))
    anns = {a["id"]: a for a in inst["annotations"]}
    images = {im["id"]: im for im in inst["images"]}
    img_dir = require(root / "coco" / "train2014", "COCO train2014 images",
                      "python -m fisa.data.download --dataset coco fetches them")
    splits = Counter(r["split"] for r in refs)
    for s in EVAL_SPLITS:
        if splits.get(s, 0) == 0:
            raise PrepareError(f"{folder / 'refs(unc).p'}: no refs in split '{s}'")
    check = refs if all_splits else [r for r in refs if r["split"] in EVAL_SPLITS]
    missing_files = set()
    for r in check:
        if r["ann_id"] not in anns:
            raise PrepareError(f"{folder}: ref {r['ref_id']} points to annotation {r['ann_id']}, not in instances.json")
        if r["image_id"] not in images:
            raise PrepareError(f"{folder}: ref {r['ref_id']} points to image {r['image_id']}, not in instances.json")
        image = images[r["image_id"]]
        if not (img_dir / image["file_name"]).exists():
            missing_files.add(image["file_name"])
        if not r.get("sentences"):
            raise PrepareError(f"{folder}: ref {r['ref_id']} has no sentences")
        if not _decode_nonempty(anns[r["ann_id"]], image):
            raise PrepareError(f"{folder}: annotation {r['ann_id']} (ref {r['ref_id']}) decodes to an empty mask")
    if missing_files:
        raise PrepareError(f"{len(missing_files)} COCO train2014 images used by {name} are missing from {img_dir}, "
                           f"e.g. {sorted(missing_files)[:3]}")
    return {"refs": dict(splits), "sentences": dict(Counter(r["split"] for r in refs for _ in r["sentences"])),
            "checked_refs": len(check), "images_checked": len({r["image_id"] for r in check})}


def prepare(root: Path, name: str, workers: int | None = None, all_splits: bool = False) -> dict:
    """Nothing to convert: validate (the files are used as the refer toolkit ships them)."""
    return validate(root, name, all_splits)
