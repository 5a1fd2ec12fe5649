"""ADE20K-847 from the full ADE20K release (ADE20K_2021_17_01), as FC-CLIP/ODISE's
`prepare_ade20k_full_sem_seg.py`:

- images come from the release's `index_ade20k.pkl` (`folder`, `filename`; a file is in
  validation iff its name's second `_` field is `val`), their label from `<name>_seg.png`:
  full-release class = (R // 10) * 256 + G;
- images whose shorter side exceeds 512 are resized so that it is 512 (longer side
  `round(long / short * 512)`): labels nearest-neighbour with OpenCV's index rule
  (src = floor(dst * (1 / (dst_size / src_size)))), images bilinear;
- full-release classes in the 847-class table -> train ids 0..846, everything else 65535;
  written as 16-bit TIFF `annotations_detectron2/<split>/<stem>.tif`, the image re-encoded
  as JPEG (PIL defaults, as the reference) to `images_detectron2/<split>/<name>`.

Layout: FC-CLIP's script writes under `ade/ADE20K_2021_17_01` while its loader reads
`ADE20K_2021_17_01`; we accept the release in either place and write beside it.

Differences we accept: the reference resizes images with OpenCV's fixed-point bilinear;
we use torch's bilinear (same sampling grid, no antialias), so resized image pixels may
differ by +-1 grey level. Labels are bit-exact.
"""
from __future__ import annotations

import ast
import pickle
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from .common import PrepareError, check_pairs, first_existing, read_image, require, save_tif16, parallel_map
from fisa.utils.io import atomic_path
from fisa.utils import safe_pickle

CANDIDATES = ("ADE20K_2021_17_01", "ade/ADE20K_2021_17_01")
TABLE_FILE = "prepare_ade20k_full_sem_seg.py"
TABLE_NAME = "ADE20K_SEM_SEG_FULL_CATEGORIES"
MAX_SIZE = 512
IGNORE = 65535


def load_class_table(path: Path) -> dict[int, int]:
    """Full-release class id -> train id, parsed (never executed) from the reference script's table."""
    require(path, "ADE-847 class table", "fetched by: python -m fisa.data.download --dataset ade847")
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as e:
        raise PrepareError(f"{path}: cannot parse the class table: {e}") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == TABLE_NAME for t in node.targets):
            try:
                rows = ast.literal_eval(node.value)
            except ValueError as e:
                raise PrepareError(f"{path}: {TABLE_NAME} is not a literal list: {e}") from None
            table = {int(r["id"]): int(r["trainId"]) for r in rows}
            train_ids = sorted(table.values())
            if train_ids != list(range(len(train_ids))):
                raise PrepareError(f"{path}: train ids are not 0..{len(train_ids) - 1} without gaps")
            return table
    raise PrepareError(f"{path}: no {TABLE_NAME} assignment found")


def class_mask(seg_rgb: np.ndarray) -> np.ndarray:
    """ADE full `_seg.png` (H,W,3) -> full-release class id map int32 (0 = unlabelled)."""
    r = seg_rgb[..., 0].astype(np.int32)
    g = seg_rgb[..., 1].astype(np.int32)
    return (r // 10) * 256 + g


def target_size(h: int, w: int, max_size: int = MAX_SIZE) -> tuple[int, int] | None:
    """(h_new, w_new) when the shorter side exceeds `max_size`, else None (the reference's rule)."""
    if w >= h > max_size:
        return max_size, round(w / float(h) * max_size)
    if h >= w > max_size:
        return round(h / float(w) * max_size), max_size
    return None


def resize_nearest_cv2(label: np.ndarray, h_new: int, w_new: int) -> np.ndarray:
    """OpenCV INTER_NEAREST: src = min(floor(dst * (1 / (dst_size / src_size))), src_size - 1)."""
    h, w = label.shape[:2]
    ifx, ify = 1.0 / (w_new / w), 1.0 / (h_new / h)
    xs = np.minimum(np.floor(np.arange(w_new) * ifx).astype(np.int64), w - 1)
    ys = np.minimum(np.floor(np.arange(h_new) * ify).astype(np.int64), h - 1)
    return label[ys[:, None], xs[None, :]]


def resize_bilinear(img: np.ndarray, h_new: int, w_new: int) -> np.ndarray:
    """Bilinear resize of a uint8 image (half-pixel centres, no antialias, like cv2 INTER_LINEAR)."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.array(img, dtype=np.float32))  # a writable copy
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
    out = F.interpolate(t, size=(h_new, w_new), mode="bilinear", align_corners=False, antialias=False)[0]
    out = out.round().clamp(0, 255).to(torch.uint8)
    return (out[0] if img.ndim == 2 else out.permute(1, 2, 0)).numpy()


def to_train_ids(label: np.ndarray, table: dict[int, int]) -> np.ndarray:
    """Full-release class ids -> uint16 train ids, 65535 for classes outside the table."""
    # A lookup table instead of the reference's per-class loop: same values, one pass.
    # Class ids are (R // 10) * 256 + G <= 25 * 256 + 255, so 65536 entries always suffice.
    lut = np.full(65536, IGNORE, dtype=np.uint16)
    for cid, train_id in table.items():
        if 0 <= cid < lut.size:
            lut[cid] = train_id
    return lut[label]


def _outputs(base: Path, file_name: str) -> tuple[Path, Path]:
    split = "validation" if file_name.split("_")[1] == "val" else "training"
    return (base / "images_detectron2" / split / file_name,
            base / "annotations_detectron2" / split / (Path(file_name).stem + ".tif"))


def _outputs_exist(base: Path, file_name: str) -> bool:
    return all(p.exists() for p in _outputs(base, file_name))


def _convert_one(item: tuple[str, str], release_parent: Path, base: Path, table: dict[int, int]) -> None:
    folder, file_name = item
    out_img, out_lab = _outputs(base, file_name)
    if out_img.exists() and out_lab.exists():
        return
    src = release_parent / folder / file_name
    img = read_image(require(src, "ADE20K full image"))
    seg = read_image(require(src.with_name(src.stem + "_seg.png"), "ADE20K full segmentation"))
    lab = class_mask(seg)
    size = target_size(img.shape[0], img.shape[1])
    if size is not None:
        img = resize_bilinear(img, *size)
        lab = resize_nearest_cv2(lab, *size)
    save_tif16(to_train_ids(lab, table), out_lab)
    with atomic_path(out_img) as tmp:
        Image.fromarray(img).save(tmp, format="JPEG")


def locate(root: Path) -> Path:
    """The release folder (`ADE20K_2021_17_01` or `ade/ADE20K_2021_17_01`)."""
    return first_existing(root, CANDIDATES, "ADE20K full release (ADE20K_2021_17_01)")


def _splits(all_splits: bool) -> tuple[str, ...]:
    return ("validation", "training") if all_splits else ("validation",)


def prepare(root: Path, workers: int | None = None, all_splits: bool = False) -> dict:
    """Write images_detectron2/annotations_detectron2 for validation (and training); returns the summary."""
    splits = _splits(all_splits)
    base = locate(root)
    index_file = require(base / "index_ade20k.pkl", "ADE20K full index")
    try:
        index = safe_pickle.load(index_file)  # downloaded: data types only, never code
        items = list(zip(index["folder"], index["filename"]))
    except safe_pickle.UnsafePickleError as e:
        raise PrepareError(str(e)) from None
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError) as e:
        raise PrepareError(f"{index_file}: not a readable ADE20K index (need 'folder' and 'filename'): {e}") from None
    wanted = [it for it in items if ("validation" if it[1].split("_")[1] == "val" else "training") in splits]
    if not wanted:
        raise PrepareError(f"{index_file}: no images of split(s) {list(splits)} in the index")
    for split in splits:
        (base / "images_detectron2" / split).mkdir(parents=True, exist_ok=True)
        (base / "annotations_detectron2" / split).mkdir(parents=True, exist_ok=True)
    todo = [it for it in wanted if not _outputs_exist(base, it[1])]
    if todo:  # the class table is only needed for what is missing (a tree prepared elsewhere is complete)
        table = load_class_table(root / "downloads" / TABLE_FILE)
        parallel_map(partial(_convert_one, release_parent=base.parent, base=base, table=table), todo, workers)
    summary = validate(root, all_splits)
    for split in splits:
        expected = sum(1 for it in wanted if ("validation" if it[1].split("_")[1] == "val" else "training") == split)
        if summary[split]["images"] != expected:
            raise PrepareError(f"ADE-847 {split}: {summary[split]['images']} prepared images, index lists {expected}")
    return summary


def validate(root: Path, all_splits: bool = False) -> dict:
    """Every image has its 16-bit label; return counts."""
    splits = _splits(all_splits)
    base = locate(root)
    summary = {"release_dir": str(base.relative_to(root))}
    for split in splits:
        n = check_pairs(base / "images_detectron2" / split, base / "annotations_detectron2" / split, ".jpg", ".tif",
                        f"ADE-847 {split}")
        summary[split] = {"images": n}
    return summary
