"""Pascal Context 59 and 459 (FC-CLIP/ODISE's `prepare_pascal_ctx_sem_seg.py` and
`prepare_pascal_ctx_full_sem_seg.py`), under `pascal_ctx_d2/`.

PC-59, from PASCAL in Detail's `VOCdevkit/VOC2010/trainval_merged.json` (what detail-api's
`Detail(...).getMask(img)` computes, written here with pycocotools):
- the semantic map starts at 0 and every segmentation annotation of the image, in file
  order, paints its `category_id` over its RLE mask (later annotations win);
- category ids are mapped to their rank among the sorted 59 context ids plus 0, then
  minus one in uint8 arithmetic: classes 0..58 (ordered by category id), 0 -> 255 ignore;
  a category id outside the 59 is an error, as the reference's assert;
- `annotations_ctx59/<split>/<stem>.png`; the image copied byte for byte to `images/<split>/`.

PC-459, from `VOCdevkit/VOC2010/trainval/<stem>.mat` (`LabelMap`, uint16, 0 = unlabelled):
0 -> 65535, k -> k - 1, written as 16-bit TIFF `annotations_ctx459/<split>/<stem>.tif` for
the images of the split (the reference iterates `images/<split>`, i.e. the JSON's phase).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from .common import (PrepareError, check_pairs, load_json, parallel_map, require, save_jpeg_copy, save_png,
                     save_tif16)

VOC = "VOCdevkit/VOC2010"
OUT = "pascal_ctx_d2"
SPLITS = {"validation": "val", "training": "train"}

# The 59 PASCAL-Context classes in the 459-class numbering of trainval_merged.json (with 0 =
# background/unlabelled). Their sorted order defines the PC-59 class indices.
CONTEXT59_IDS = (
    0, 2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105, 113, 115,
    144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308, 324, 326, 347, 349,
    354, 355, 360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458,
)


def decode_rle(segmentation: dict, height: int, width: int) -> np.ndarray:
    """COCO-style RLE (compressed or not) -> (H,W) uint8 mask, via pycocotools."""
    from pycocotools import mask as mask_utils

    rle = segmentation
    if isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(rle, height, width)
    elif isinstance(rle.get("counts"), str):
        rle = {"size": rle["size"], "counts": rle["counts"].encode()}
    return mask_utils.decode(rle)


def semantic_mask(image: dict, annotations: list[dict]) -> np.ndarray:
    """detail-api's class mask: annotations painted in order, float64 (H,W) of category ids."""
    mask = np.zeros((image["height"], image["width"]))
    for ann in annotations:
        m = decode_rle(ann["segmentation"], image["height"], image["width"])
        mask[np.nonzero(m)] = ann["category_id"]
    return mask


def to_context59(mask: np.ndarray, where: str = "") -> np.ndarray:
    """Category-id mask -> uint8 PC-59 labels (0..58, 255 ignore)."""
    mapping = np.asarray(CONTEXT59_IDS)
    values = np.unique(mask)
    bad = [int(v) for v in values if v not in mapping]
    if bad:
        raise PrepareError(f"{where}: category ids {bad} are not among the 59 Pascal Context classes")
    index = np.digitize(mask.ravel(), mapping, right=True).astype(np.uint8)
    return (index.reshape(mask.shape) - np.uint8(1)).astype(np.uint8)


def label459(label_map: np.ndarray, where: str = "") -> np.ndarray:
    """`LabelMap` (uint16, 0 = unlabelled) -> 0..458, 65535 ignore."""
    if label_map.dtype != np.uint16:
        raise PrepareError(f"{where}: LabelMap is {label_map.dtype}, expected uint16")
    out = label_map.copy()
    out[out == 0] = 65535
    out = out - np.uint16(1)
    out[out == 65534] = 65535
    return out


def _index_json(root: Path) -> tuple[list[dict], dict[int, list[dict]]]:
    data = load_json(require(root / VOC / "trainval_merged.json", "PASCAL in Detail annotations",
                             "python -m fisa.data.download --dataset pc59"))
    for key in ("images", "annos_segmentation"):
        if key not in data:
            raise PrepareError(f"{root / VOC / 'trainval_merged.json'}: no '{key}' key")
    by_image: dict[int, list[dict]] = {}
    for ann in data["annos_segmentation"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    return data["images"], by_image


def _images_of(images: list[dict], phase: str) -> list[dict]:
    return sorted((im for im in images if im.get("phase") == phase), key=lambda im: im["file_name"])


def _copy_image(image: dict, root: Path, split: str) -> None:
    dst = root / OUT / "images" / split / image["file_name"]
    if not dst.exists():
        save_jpeg_copy(require(root / VOC / "JPEGImages" / image["file_name"], "VOC2010 image"), dst)


def _ctx59_one(item: tuple[dict, list[dict]], root: Path, split: str) -> None:
    image, anns = item
    dst = root / OUT / "annotations_ctx59" / split / image["file_name"].replace("jpg", "png")
    _copy_image(image, root, split)
    if not dst.exists():
        save_png(to_context59(semantic_mask(image, anns), where=image["file_name"]), dst)


def _ctx459_one(image: dict, root: Path, split: str) -> None:
    import scipy.io

    stem = Path(image["file_name"]).stem
    dst = root / OUT / "annotations_ctx459" / split / f"{stem}.tif"
    _copy_image(image, root, split)
    if dst.exists():
        return
    mat_file = require(root / VOC / "trainval" / f"{stem}.mat", "Pascal Context 459 label map",
                       "from trainval.tar.gz; python -m fisa.data.download --dataset pc459")
    try:
        mat = scipy.io.loadmat(mat_file)
    except (ValueError, OSError, TypeError) as e:
        raise PrepareError(f"cannot read {mat_file}: {e}") from None
    if "LabelMap" not in mat:
        raise PrepareError(f"{mat_file}: no 'LabelMap' variable")
    save_tif16(label459(mat["LabelMap"], where=str(mat_file)), dst)


def _splits(all_splits: bool) -> list[str]:
    return list(SPLITS) if all_splits else ["validation"]


def prepare_pc59(root: Path, workers: int | None = None, all_splits: bool = False) -> dict:
    """Images + `annotations_ctx59` for the validation split (and training with all_splits)."""
    images, by_image = _index_json(root)
    for split in _splits(all_splits):
        (root / OUT / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / OUT / "annotations_ctx59" / split).mkdir(parents=True, exist_ok=True)
        chosen = _images_of(images, SPLITS[split])
        if not chosen:
            raise PrepareError(f"trainval_merged.json lists no '{SPLITS[split]}' images")
        items = [(im, by_image.get(im["image_id"], [])) for im in chosen]
        parallel_map(partial(_ctx59_one, root=root, split=split), items, workers)
    return validate_pc59(root, all_splits)


def prepare_pc459(root: Path, workers: int | None = None, all_splits: bool = False) -> dict:
    """Images + `annotations_ctx459` for the validation split (and training with all_splits)."""
    images, _ = _index_json(root)
    for split in _splits(all_splits):
        (root / OUT / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / OUT / "annotations_ctx459" / split).mkdir(parents=True, exist_ok=True)
        chosen = _images_of(images, SPLITS[split])
        if not chosen:
            raise PrepareError(f"trainval_merged.json lists no '{SPLITS[split]}' images")
        parallel_map(partial(_ctx459_one, root=root, split=split), chosen, workers)
    return validate_pc459(root, all_splits)


def validate_pc59(root: Path, all_splits: bool = False) -> dict:
    """Images and PC-59 labels pair up; return counts."""
    return {s: {"images": check_pairs(root / OUT / "images" / s, root / OUT / "annotations_ctx59" / s, ".jpg", ".png",
                                      f"Pascal Context 59 {s}")} for s in _splits(all_splits)}


def validate_pc459(root: Path, all_splits: bool = False) -> dict:
    """Images and PC-459 labels pair up; return counts."""
    return {s: {"images": check_pairs(root / OUT / "images" / s, root / OUT / "annotations_ctx459" / s, ".jpg", ".tif",
                                      f"Pascal Context 459 {s}")} for s in _splits(all_splits)}
