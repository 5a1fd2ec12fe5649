"""Loaders of the PREPARED datasets (the layout of `fisa.data.registry`) as torch Datasets.

`build_dataset(name, split, root)` returns one of three readers, chosen by the dataset's
tasks; every item is a dict:

- all: `image` uint8 [3,H,W], `image_id` (the panoptic JSON's id, else the file stem),
  `file_name` (the image's name in its folder)
- panoptic datasets (coco, ade150, mapillary): `labels` int64[N], `masks` bool[N,H,W],
  `iscrowd` bool[N] from the panopticapi JSON + RGB-id PNG, and `sem_seg` int64[H,W] (the
  prepared semantic map, ignore label kept) on the evaluation split
- semantic datasets (ade847, pc59, pc459): `sem_seg` int64[H,W], and `labels`/`masks`/
  `iscrowd` derived from it (one mask per class present), so training code sees one format
- referring (refcoco, refcocoplus): one item per referred object: `expressions` list[str]
  (the raw sentences, as LAVT feeds them), `sentence_ids` list[int], `ref_id`, `ann_id`,
  `mask` bool[H,W] (the refer toolkit's getMask as LAVT thresholds it: pixels covered by
  exactly one of the object's polygons)

Class ids are contiguous indices into `get_meta(name).classes`. A missing file raises
DatasetError naming the path and the command that creates it.
"""
from __future__ import annotations

import json
import math
import pickle
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from fisa.utils import safe_pickle
from fisa.utils.markers import marker_path
from fisa.utils.panoptic_ids import rgb2id

from .registry import DatasetError, DatasetMeta, get_meta

__all__ = ["build_dataset", "subset", "subset_indices", "read_image", "read_label_map",
           "PanopticDataset", "SemanticDataset", "ReferringDataset"]


def _missing(path: Path, meta: DatasetMeta, what: str) -> DatasetError:
    return DatasetError(f"{meta.name}: missing {what}: {path} (create it with {meta.prepare_hint})")


def _require(path: Path, meta: DatasetMeta, what: str) -> Path:
    if not path.exists():
        raise _missing(path, meta, what)
    return path


def read_image(path: str | Path) -> torch.Tensor:
    """An RGB image file -> uint8 [3,H,W] (grey/palette/RGBA converted to RGB)."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read image {path}: {e}") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def read_label_map(path: str | Path) -> np.ndarray:
    """A label map (8/16-bit PNG, or 16-bit TIFF as the prepare step writes) -> (H,W) integer array.

    Palette PNGs (Mapillary's labels) give their indices, not colours.
    """
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read label map {path}: {e}") from None
    if arr.ndim != 2:
        raise DatasetError(f"label map {path}: expected a single-channel image, got shape {arr.shape}")
    return arr


def _masks_from_sem_seg(sem: torch.Tensor, ignore_label: int) -> tuple[torch.Tensor, torch.Tensor]:
    """sem_seg int64 [H,W] -> (labels int64 [N], masks bool [N,H,W]), one mask per class present."""
    labels = torch.unique(sem)
    labels = labels[labels != ignore_label]
    masks = sem[None] == labels[:, None, None] if len(labels) else torch.zeros(0, *sem.shape, dtype=torch.bool)
    return labels.to(torch.int64), masks


class _PackedRecords:
    """A list of small records kept as one pickled byte buffer (as detectron2's DatasetFromList
    with serialize=True): DataLoader workers fork the dataset, and a Python list of dicts
    would be copied page by page as reference counts change (COCO train: 118k records)."""

    def __init__(self, records: list):
        blobs = [pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in records]
        self._addr = np.cumsum([len(b) for b in blobs], dtype=np.int64)
        self._buf = np.frombuffer(b"".join(blobs), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._addr)

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i = i % len(self)
        start = int(self._addr[i - 1]) if i > 0 else 0
        return pickle.loads(self._buf[start:int(self._addr[i])].tobytes())


class _Base(Dataset):
    def __init__(self, meta: DatasetMeta, split: str, root: str | Path, transform=None):
        self.meta, self.root, self.transform = meta, Path(root), transform
        self.split = split
        self.layout = meta.layout(split, root)
        self.paths = meta.paths(split, root)

    def _finish(self, item: dict) -> dict:
        return self.transform(item) if self.transform is not None else item

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.meta.name!r}, split={self.split!r}, root={str(self.root)!r}, n={len(self)})"


class SemanticDataset(_Base):
    """Images + semantic label maps paired by file stem (detectron2's `load_sem_seg`)."""

    def __init__(self, meta: DatasetMeta, split: str, root: str | Path, transform=None):
        super().__init__(meta, split, root, transform)
        img_dir = _require(self.paths["image_dir"], meta, "image folder")
        self.sem_dir = _require(self.paths["sem_seg_dir"], meta, "semantic label folder")
        self.images = sorted(p.name for p in img_dir.iterdir() if p.suffix.lower() == self.layout.image_ext)
        if not self.images:
            raise DatasetError(f"{meta.name}: no *{self.layout.image_ext} images in {img_dir} "
                               f"(create them with {meta.prepare_hint})")
        self.img_dir = img_dir

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        name = self.images[i]
        stem = Path(name).stem
        label_path = _require(self.sem_dir / f"{stem}{self.layout.sem_seg_ext}", self.meta, "semantic label map")
        image = read_image(self.img_dir / name)
        sem = torch.from_numpy(read_label_map(label_path).astype(np.int64))
        if sem.shape != image.shape[1:]:
            raise DatasetError(f"{label_path}: label map {tuple(sem.shape)} does not match image {tuple(image.shape[1:])}")
        labels, masks = _masks_from_sem_seg(sem, self.meta.ignore_label)
        return self._finish({"image": image, "image_id": stem, "file_name": name, "sem_seg": sem,
                             "labels": labels, "masks": masks, "iscrowd": torch.zeros(len(labels), dtype=torch.bool)})


class PanopticDataset(_Base):
    """panopticapi JSON + RGB-id PNGs (+ the prepared semantic maps when `with_sem_seg`)."""

    def __init__(self, meta: DatasetMeta, split: str, root: str | Path, transform=None, with_sem_seg: bool = False):
        super().__init__(meta, split, root, transform)
        json_path = _require(self.paths["panoptic_json"], meta, "panoptic JSON")
        self.pan_dir = _require(self.paths["panoptic_dir"], meta, "panoptic PNG folder")
        self.img_dir = _require(self.paths["image_dir"], meta, "image folder")
        self.sem_dir = self.paths.get("sem_seg_dir") if with_sem_seg else None
        if self.sem_dir is not None:
            _require(self.sem_dir, meta, "semantic label folder")
        try:
            data = json.loads(json_path.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"{json_path}: not valid JSON: {e}") from None
        for key in ("annotations", "categories"):
            if key not in data:
                raise DatasetError(f"{json_path}: no '{key}' key (not a panopticapi JSON)")
        self.json_path = json_path
        self.cat_to_index = meta.category_id_to_index
        unknown = sorted({c["id"] for c in data["categories"]} - set(self.cat_to_index))
        if unknown:
            raise DatasetError(f"{json_path}: categories {unknown[:5]} are not in the registry's {meta.name} "
                               f"category ids")
        images = {im["id"]: im for im in data.get("images", [])}
        records = []
        for ann in sorted(data["annotations"], key=lambda a: a["file_name"]):
            im = images.get(ann["image_id"])
            image_name = im["file_name"] if im else Path(ann["file_name"]).stem + self.layout.image_ext
            # Keep only what items need (not bbox/area): smaller records for big JSONs.
            segs = [{"id": g["id"], "category_id": g["category_id"], "iscrowd": g.get("iscrowd", 0)}
                    for g in ann["segments_info"]]
            records.append(({"image_id": ann["image_id"], "file_name": ann["file_name"], "segments_info": segs},
                            image_name))
        self.records = _PackedRecords(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        ann, image_name = self.records[i]
        image = read_image(_require(self.img_dir / image_name, self.meta, "image"))
        png = _require(self.pan_dir / ann["file_name"], self.meta, "panoptic PNG")
        try:
            with Image.open(png) as im:
                ids = rgb2id(np.asarray(im.convert("RGB")))
        except (OSError, ValueError) as e:
            raise DatasetError(f"cannot read panoptic PNG {png}: {e}") from None
        if ids.shape != tuple(image.shape[1:]):
            raise DatasetError(f"{png}: panoptic PNG {ids.shape} does not match image {tuple(image.shape[1:])}")
        labels, masks, crowd = [], [], []
        for seg in ann["segments_info"]:
            cat = seg["category_id"]
            if cat not in self.cat_to_index:
                raise DatasetError(f"{self.json_path}: image {ann['image_id']} segment {seg['id']} has unknown "
                                   f"category_id {cat}")
            m = ids == seg["id"]
            if not m.any():  # a segment listed in the JSON but absent from the PNG carries no pixels
                continue
            labels.append(self.cat_to_index[cat])
            masks.append(torch.from_numpy(m))
            crowd.append(bool(seg.get("iscrowd", 0)))
        h, w = ids.shape
        item = {"image": image, "image_id": ann["image_id"], "file_name": image_name,
                "labels": torch.tensor(labels, dtype=torch.int64),
                "masks": torch.stack(masks) if masks else torch.zeros(0, h, w, dtype=torch.bool),
                "iscrowd": torch.tensor(crowd, dtype=torch.bool)}
        if self.sem_dir is not None:
            sem_path = _require(self.sem_dir / (Path(ann["file_name"]).stem + self.layout.sem_seg_ext), self.meta,
                                "semantic label map")
            item["sem_seg"] = torch.from_numpy(read_label_map(sem_path).astype(np.int64))
        return self._finish(item)


def load_refs(path: Path) -> list[dict]:
    """The refer toolkit's `refs(unc).p` (a Python 2 pickle; strings decoded as latin-1 when not ASCII)."""
    for kwargs in ({}, {"encoding": "latin1"}):
        try:
            return safe_pickle.load(path, **kwargs)  # downloaded: data types only, never code
        except UnicodeDecodeError:
            continue
        except safe_pickle.UnsafePickleError as e:
            raise DatasetError(str(e)) from None
        except (pickle.UnpicklingError, EOFError, ValueError, AttributeError) as e:
            raise DatasetError(f"{path}: not a readable refs pickle: {e}") from None
    raise DatasetError(f"{path}: cannot decode the refs pickle")


class ReferringDataset(_Base):
    """RefCOCO/RefCOCO+ (UNC): one item per ref of the split, masks decoded with pycocotools."""

    def __init__(self, meta: DatasetMeta, split: str, root: str | Path, transform=None):
        super().__init__(meta, split, root, transform)
        refs = load_refs(_require(self.paths["refs"], meta, "refs pickle"))
        inst_path = _require(self.paths["instances_json"], meta, "refer instances JSON")
        self.img_dir = _require(self.paths["image_dir"], meta, "COCO train2014 image folder")
        inst = json.loads(inst_path.read_text())
        self.images = {im["id"]: im for im in inst["images"]}
        self.anns = {a["id"]: a for a in inst["annotations"]}
        want = self.layout.refs_split
        refs = sorted((r for r in refs if r["split"] == want), key=lambda r: r["ref_id"])
        if not refs:
            raise DatasetError(f"{self.paths['refs']}: no refs in split {want!r}")
        for r in refs:
            if r["ann_id"] not in self.anns or r["image_id"] not in self.images:
                raise DatasetError(f"{inst_path}: ref {r['ref_id']} points to annotation {r['ann_id']} / image "
                                   f"{r['image_id']}, not in the file")
        # Only the split's images and annotations are kept (instances.json covers all splits).
        self.images = {r["image_id"]: self.images[r["image_id"]] for r in refs}
        self.anns = {r["ann_id"]: self.anns[r["ann_id"]] for r in refs}
        self.refs = _PackedRecords([{k: r[k] for k in ("ref_id", "ann_id", "image_id", "sentences")} for r in refs])

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> dict:
        from pycocotools import mask as mask_utils

        ref = self.refs[i]
        im = self.images[ref["image_id"]]
        image = read_image(_require(self.img_dir / im["file_name"], self.meta, "COCO train2014 image"))
        h, w = int(im["height"]), int(im["width"])
        seg = self.anns[ref["ann_id"]]["segmentation"]
        if isinstance(seg, list):  # polygons: one RLE each
            rles = mask_utils.frPyObjects(seg, h, w)
        elif isinstance(seg.get("counts"), list):  # uncompressed RLE
            rles = [mask_utils.frPyObjects(seg, h, w)]
        else:
            rles = [seg]
        with warnings.catch_warnings():  # pycocotools' numpy-2 `__array__(copy=...)` notice, not ours to fix
            warnings.simplefilter("ignore", DeprecationWarning)
            layers = mask_utils.decode(rles)  # [H, W, polygons]
        # The refer toolkit's getMask sums the polygon layers (uint8) and LAVT's loader keeps the
        # pixels where that sum == 1: where two polygons of one object overlap, the target is empty.
        mask = torch.from_numpy(layers.sum(axis=2, dtype=np.int64) == 1)
        if mask.shape != image.shape[1:]:
            raise DatasetError(f"{self.paths['instances_json']}: image {im['id']} is {h}x{w} in the JSON but "
                               f"{tuple(image.shape[1:])} on disk")
        sents = ref["sentences"]
        missing = [k for k, s in enumerate(sents) if not isinstance(s.get("raw"), str)]
        if missing:
            raise DatasetError(f"{self.paths['refs']}: ref {ref['ref_id']} sentence {missing[0]} has no 'raw' text")
        # The raw sentence, as LAVT / Mask Grounding feed it (not the toolkit's lower-cased `sent`).
        return self._finish({"image": image, "image_id": ref["image_id"], "file_name": im["file_name"],
                             "ref_id": ref["ref_id"], "ann_id": ref["ann_id"],
                             "expressions": [s["raw"] for s in sents],
                             "sentence_ids": [s.get("sent_id", k) for k, s in enumerate(sents)], "mask": mask})


def build_dataset(name: str, split: str, root: str | Path, transform=None, *,
                  with_sem_seg: Optional[bool] = None, require_marker: bool = False) -> Dataset:
    """The prepared dataset `name`/`split` under `root` as a torch Dataset of dicts (see the module doc).

    `with_sem_seg` (panoptic datasets): also load the semantic map; default on the evaluation
    split only. `require_marker`: refuse a dataset whose `<root>/.fisa/<name>.prepare.done`
    is missing (a half-prepared tree) or no longer matches the tree (`fisa.utils.markers`).
    """
    meta = get_meta(name)
    meta.split(split)  # unknown split -> DatasetError listing the known ones
    if require_marker and not marker_path(root, name).exists():
        raise DatasetError(f"{name} is not prepared under {root}: {marker_path(root, name)} is missing "
                           f"(create it with {meta.prepare_hint})")
    if require_marker:  # the marker must still describe the tree (a deleted folder is caught here)
        from fisa.utils.markers import check_data_marker

        check_data_marker(name, root)
    if "referring" in meta.tasks:
        return ReferringDataset(meta, split, root, transform)
    if "panoptic" in meta.tasks:
        if with_sem_seg is None:
            with_sem_seg = "semantic" in meta.tasks and meta.split(split) is meta.split(meta.eval_split)
        return PanopticDataset(meta, split, root, transform, with_sem_seg=with_sem_seg)
    return SemanticDataset(meta, split, root, transform)


def subset_indices(n: int, fraction: float, seed: int) -> list[int]:
    """round(fraction*n) indices (at least 1), drawn without replacement from a seeded permutation, sorted."""
    if not 0 < fraction <= 1:
        raise ValueError(f"data fraction must be in (0, 1], got {fraction}")
    if n <= 0:
        raise ValueError("cannot take a subset of an empty dataset")
    k = max(1, int(math.floor(fraction * n + 0.5)))
    g = torch.Generator().manual_seed(int(seed))
    return sorted(torch.randperm(n, generator=g)[:k].tolist())


def subset(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """The Fig. 7 data-fraction subset: deterministic from `seed`, at least one image; nested fractions
    of the same seed are nested (the first k of one permutation)."""
    if fraction >= 1.0:
        return dataset
    return Subset(dataset, subset_indices(len(dataset), fraction, seed))
