"""The dataset registry: names, class lists, tasks, splits and the prepared on-disk layout.

This module is the single source of truth for where a prepared dataset lives under the
data root (`$DETECTRON2_DATASETS` or the preset's `data_root`). The layout follows the
detectron2 / Mask2Former / FC-CLIP convention, so a tree prepared for FC-CLIP works as is:

    coco/{train2017,val2017}/*.jpg, coco/annotations/panoptic_{split}.json,
    coco/panoptic_{split}/*.png (RGB ids), coco/panoptic_semseg_{split}/*.png (0..132, 255)
    ADEChallengeData2016/images/{training,validation}/*.jpg,
    ADEChallengeData2016/annotations_detectron2/{training,validation}/*.png (0..149, 255),
    ADEChallengeData2016/ade20k_panoptic_{train,val}.json + ade20k_panoptic_{train,val}/*.png
    ADE20K_2021_17_01/{images,annotations}_detectron2/{training,validation}  (*.tif, 16-bit, 65535)
        (FC-CLIP's prepare script writes under ade/ADE20K_2021_17_01: both are accepted)
    pascal_ctx_d2/images/{training,validation}/*.jpg, annotations_ctx59/<split>/*.png (255),
        annotations_ctx459/<split>/*.tif (16-bit, 65535)
    mapillary_vistas/{training,validation}/{images,labels,panoptic}, panoptic/panoptic_2018.json
        (v1.2: labels 0..64, 65 = unlabelled = ignore, as Mask2Former)
    refcoco/{refcoco,refcoco+}/{refs(unc).p,instances.json}, images in coco/train2014/

Class lists are JSON data files in `fisa/data/classes/` (built from the official sources by
`fisa/data/classes/build.py`; each file records its sources). A class is a list of
synonyms (the first is the display name), as FC-CLIP/ODISE use for open-vocabulary
evaluation.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional

from fisa.utils.markers import MARKER_DIR, marker_path

CLASSES_DIR = Path(__file__).resolve().parent / "classes"


class DatasetError(ValueError):
    """Unknown dataset/split, or a prepared file missing or malformed (the message names it)."""


@dataclass(frozen=True)
class SplitLayout:
    """Where one split of a prepared dataset lives, relative to the data root.

    Paths containing `{base}` are formatted with the dataset's base folder (the first of
    `DatasetMeta.bases` that exists under the root).
    """

    image_dir: str                       # *.jpg (for refcoco: COCO train2014)
    image_ext: str = ".jpg"
    sem_seg_dir: Optional[str] = None    # semantic label maps
    sem_seg_ext: str = ".png"            # .png (8-bit) or .tif (16-bit)
    panoptic_json: Optional[str] = None  # panopticapi JSON
    panoptic_dir: Optional[str] = None   # RGB-id PNGs
    refs: Optional[str] = None           # refer toolkit's refs(unc).p
    instances_json: Optional[str] = None  # refer toolkit's instances.json
    refs_split: Optional[str] = None     # the `split` value of refs in this split

    def resolved(self, base: str) -> "SplitLayout":
        """A copy with `{base}` substituted."""
        kw = {}
        for f in ("image_dir", "sem_seg_dir", "panoptic_json", "panoptic_dir", "refs", "instances_json"):
            v = getattr(self, f)
            kw[f] = v.format(base=base) if isinstance(v, str) else v
        return SplitLayout(**{**self.__dict__, **kw})

    def files(self) -> dict[str, str]:
        """The non-empty path fields (name -> relative path)."""
        return {f: getattr(self, f) for f in ("image_dir", "sem_seg_dir", "panoptic_json", "panoptic_dir", "refs",
                                               "instances_json") if getattr(self, f)}


@dataclass(frozen=True)
class DatasetMeta:
    """Everything the harness knows about one benchmark (no I/O beyond the class-list JSON)."""

    name: str
    title: str
    classes: list[list[str]]             # synonyms per class, first = display name; [] for referring
    thing: list[bool]                    # per class
    ignore_label: int
    tasks: tuple[str, ...]               # subset of panoptic / semantic / referring
    train_split: Optional[str]
    eval_split: str
    splits: dict[str, SplitLayout]
    bases: tuple[str, ...]               # accepted base folders; the first is what prepare writes
    category_ids: Optional[list[int]] = None  # panoptic: dataset category id of each contiguous index
    prepare_hint: str = ""               # how to create the prepared files
    sources: list[dict] = field(default_factory=list)  # where the class list comes from
    synonyms: str = "fcclip"             # which synonym lists `classes` holds (see SYNONYM_CHOICES)
    downloads_of: tuple[str, ...] = ()   # other datasets whose downloaded files this one's preparation reads

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        """The first synonym of each class (display / per-class table names)."""
        return [c[0] for c in self.classes]

    @property
    def category_id_to_index(self) -> dict[int, int]:
        """Panoptic category id -> contiguous class index."""
        if self.category_ids is None:
            raise DatasetError(f"{self.name}: no panoptic category ids (tasks {list(self.tasks)})")
        return {cid: i for i, cid in enumerate(self.category_ids)}

    def split(self, split: str) -> SplitLayout:
        """The (unresolved) layout of `split`; accepts the folder names as aliases ('val2017', 'validation')."""
        key = SPLIT_ALIASES.get(split, split)
        if key not in self.splits:
            raise DatasetError(f"{self.name}: unknown split {split!r}; known: {', '.join(self.splits)}")
        return self.splits[key]

    def base_dir(self, root: str | Path) -> str:
        """The base folder present under `root` (the first accepted one if none exists yet)."""
        root = Path(root)
        for b in self.bases:
            if (root / b).exists():
                return b
        return self.bases[0]

    def layout(self, split: str, root: str | Path | None = None) -> SplitLayout:
        """The layout of `split` relative to the root (with the base folder found under `root`)."""
        base = self.base_dir(root) if root is not None else self.bases[0]
        return self.split(split).resolved(base)

    def paths(self, split: str, root: str | Path) -> dict[str, Path]:
        """Absolute paths of `split`'s files/folders under `root` (name -> Path)."""
        return {k: Path(root) / v for k, v in self.layout(split, root).files().items()}


SPLIT_ALIASES = {"val2017": "val", "validation": "val", "train2017": "train", "training": "train"}

_PREPARE = "python -m fisa.data.prepare --dataset {name} --root ROOT (Snakemake: rule prepare, dataset={name}; " \
           "small preset: python -m fisa.data.synthetic --root ROOT, rule synthetic_data)"


def _coco_split(s: str) -> SplitLayout:
    return SplitLayout(image_dir=f"{{base}}/{s}", sem_seg_dir=f"{{base}}/panoptic_semseg_{s}",
                       panoptic_json=f"{{base}}/annotations/panoptic_{s}.json", panoptic_dir=f"{{base}}/panoptic_{s}")


def _ade150_split(short: str, folder: str) -> SplitLayout:
    return SplitLayout(image_dir=f"{{base}}/images/{folder}", sem_seg_dir=f"{{base}}/annotations_detectron2/{folder}",
                       panoptic_json=f"{{base}}/ade20k_panoptic_{short}.json",
                       panoptic_dir=f"{{base}}/ade20k_panoptic_{short}")


def _sem_split(images: str, labels: str, ext: str) -> SplitLayout:
    return SplitLayout(image_dir=f"{{base}}/{images}", sem_seg_dir=f"{{base}}/{labels}", sem_seg_ext=ext)


def _mapillary_split(folder: str) -> SplitLayout:
    return SplitLayout(image_dir=f"{{base}}/{folder}/images", sem_seg_dir=f"{{base}}/{folder}/labels",
                       panoptic_json=f"{{base}}/{folder}/panoptic/panoptic_2018.json",
                       panoptic_dir=f"{{base}}/{folder}/panoptic")


def _ref_split(folder: str, split: str) -> SplitLayout:
    return SplitLayout(image_dir="coco/train2014", refs=f"{{base}}/{folder}/refs(unc).p",
                       instances_json=f"{{base}}/{folder}/instances.json", refs_split=split)


# name -> static description; classes/thing/category ids come from fisa/data/classes/<name>.json
_SPECS: dict[str, dict] = {
    "coco": dict(title="COCO panoptic", ignore_label=255, tasks=("panoptic", "semantic"),
                 train_split="train", eval_split="val", bases=("coco",),
                 splits={"train": _coco_split("train2017"), "val": _coco_split("val2017")}, num_classes=133),
    "ade150": dict(title="ADE20K-150", ignore_label=255, tasks=("panoptic", "semantic"),
                   train_split="train", eval_split="val", bases=("ADEChallengeData2016",),
                   splits={"train": _ade150_split("train", "training"), "val": _ade150_split("val", "validation")},
                   num_classes=150),
    "ade847": dict(title="ADE20K-847", ignore_label=65535, tasks=("semantic",),
                   train_split="train", eval_split="val", bases=("ADE20K_2021_17_01", "ade/ADE20K_2021_17_01"),
                   splits={"train": _sem_split("images_detectron2/training", "annotations_detectron2/training", ".tif"),
                           "val": _sem_split("images_detectron2/validation", "annotations_detectron2/validation",
                                             ".tif")},
                   num_classes=847),
    "pc59": dict(title="Pascal Context 59", ignore_label=255, tasks=("semantic",),
                 train_split="train", eval_split="val", bases=("pascal_ctx_d2",),
                 splits={"train": _sem_split("images/training", "annotations_ctx59/training", ".png"),
                         "val": _sem_split("images/validation", "annotations_ctx59/validation", ".png")},
                 num_classes=59),
    "pc459": dict(title="Pascal Context 459", ignore_label=65535, tasks=("semantic",),
                  train_split="train", eval_split="val", bases=("pascal_ctx_d2",),
                  splits={"train": _sem_split("images/training", "annotations_ctx459/training", ".tif"),
                          "val": _sem_split("images/validation", "annotations_ctx459/validation", ".tif")},
                  num_classes=459),
    "mapillary": dict(title="Mapillary Vistas v1.2", ignore_label=65, tasks=("panoptic", "semantic"),
                      train_split="train", eval_split="val", bases=("mapillary_vistas",),
                      splits={"train": _mapillary_split("training"), "val": _mapillary_split("validation")},
                      num_classes=65),
    "refcoco": dict(title="RefCOCO (UNC)", ignore_label=255, tasks=("referring",),
                    train_split="train", eval_split="val", bases=("refcoco",),
                    splits={s: _ref_split("refcoco", s) for s in ("train", "val", "testA", "testB")}, num_classes=0,
                    downloads_of=("coco",)),  # the images are COCO's train2014
    "refcocoplus": dict(title="RefCOCO+ (UNC)", ignore_label=255, tasks=("referring",),
                        train_split="train", eval_split="val", bases=("refcoco",),
                        splits={s: _ref_split("refcoco+", s) for s in ("train", "val", "testA", "testB")},
                        num_classes=0, downloads_of=("coco",)),
}


# Alternative synonym lists a dataset offers besides its class file's `names` ("fcclip", the
# default): ADE-150's "objectinfo150" = its official objectInfo150 names split at ", " (the
# class file's `name`), e.g. "road, route" -> ["road", "route"]. Config key eval.ade150_synonyms.
SYNONYM_CHOICES: dict[str, tuple[str, ...]] = {"ade150": ("fcclip", "objectinfo150")}


def list_datasets() -> list[str]:
    """The registry's dataset names, in the paper's order."""
    return list(_SPECS)


def _load_classes(name: str, expected: int, synonyms: str = "fcclip"
                  ) -> tuple[list[list[str]], list[bool], Optional[list[int]], list[dict]]:
    """(classes, thing flags, category ids, sources) from `classes/<name>.json`; `synonyms`
    "objectinfo150" takes each class's official name split at "," instead of its `names`."""
    if expected == 0:
        return [], [], None, []
    path = CLASSES_DIR / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"class list missing: {path} (rebuild with python -m fisa.data.classes.build)") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON: {e}") from None
    entries = data.get("classes")
    if not isinstance(entries, list) or len(entries) != expected:
        raise DatasetError(f"{path}: expected {expected} classes under 'classes', got "
                           f"{len(entries) if isinstance(entries, list) else type(entries).__name__}")
    classes, thing, ids = [], [], []
    for i, e in enumerate(entries):
        names = e.get("names")
        if synonyms == "objectinfo150":
            names = [n.strip() for n in str(e.get("name", "")).split(",") if n.strip()]
        if not names or not all(isinstance(n, str) and n for n in names):
            raise DatasetError(f"{path}: class {i} has no names")
        classes.append(list(names))
        thing.append(bool(e.get("isthing", False)))
        ids.append(e.get("id"))
    category_ids = [int(i) for i in ids] if all(i is not None for i in ids) else None
    return classes, thing, category_ids, list(data.get("sources", []))


@lru_cache(maxsize=None)
def _meta(name: str, synonyms: str) -> DatasetMeta:
    spec = dict(_SPECS[name])
    n = spec.pop("num_classes")
    classes, thing, category_ids, sources = _load_classes(name, n, synonyms)
    if "panoptic" not in spec["tasks"]:
        category_ids = None
    return DatasetMeta(name=name, classes=classes, thing=thing, category_ids=category_ids, sources=sources,
                       prepare_hint=_PREPARE.format(name=name), synonyms=synonyms, **spec)


def get_meta(name: str, synonyms: str | None = None) -> DatasetMeta:
    """The registry entry of dataset `name` (coco, ade150, ade847, pc59, pc459, mapillary, refcoco, refcocoplus).

    `synonyms`: which synonym lists `classes` holds; None or "fcclip" = the class file's
    (FC-CLIP's lists), else one of `SYNONYM_CHOICES[name]` (ADE-150: "objectinfo150")."""
    if name not in _SPECS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(_SPECS)}")
    synonyms = synonyms or "fcclip"
    choices = SYNONYM_CHOICES.get(name, ("fcclip",))
    if synonyms not in choices:
        raise DatasetError(f"{name}: unknown synonym lists {synonyms!r}; {name} has: {', '.join(choices)}")
    return _meta(name, synonyms)


# Expected size of each split: images (RefCOCO/+: refs, the items the loader yields). A
# prepared split of another size is an error unless subsets are allowed (eval.allow_subset,
# prepare --allow-subset); see check_split_size.
OFFICIAL_SIZES: dict[str, dict[str, int]] = {
    # COCO 2017 (cocodataset.org; panoptic_{train,val}2017.json list as many images)
    "coco": {"train": 118287, "val": 5000},
    # ADEChallengeData2016 / SceneParsing benchmark (Zhou et al., CVPR 2017): 20,210 train, 2,000 val
    "ade150": {"train": 20210, "val": 2000},
    # ADE20K_2021_17_01 full release (ADE20K site: 25,574 training, 2,000 validation images)
    "ade847": {"train": 25574, "val": 2000},
    # PASCAL-Context (Mottaghi et al., CVPR 2014) on VOC2010: 4,998 train, 5,105 val
    "pc59": {"train": 4998, "val": 5105},
    "pc459": {"train": 4998, "val": 5105},
    # Mapillary Vistas v1.2 (Neuhold et al., ICCV 2017): 18,000 training, 2,000 validation
    "mapillary": {"train": 18000, "val": 2000},
    # refs per UNC split (Yu et al., ECCV 2016; TFDS `ref_coco` catalog): 50,000 / 49,856 in all
    "refcoco": {"train": 42404, "val": 3811, "testA": 1975, "testB": 1810},
    "refcocoplus": {"train": 42278, "val": 3805, "testA": 1975, "testB": 1798},
}


def expected_sizes_path(root: str | Path, name: str) -> Path:
    """`<root>/.fisa/<name>.expected_sizes.json`: the sizes a stand-in generator declares for its
    tiny splits (fisa.data.synthetic; the prepare tests' miniatures). Real data has none."""
    return Path(root) / MARKER_DIR / f"{name}.expected_sizes.json"


def declare_expected_sizes(root: str | Path, name: str, sizes: dict[str, int], generator: str) -> Path:
    """Write the declaration of a stand-in's split sizes (atomically); returns its path."""
    from fisa.utils.io import atomic_write_json

    path = expected_sizes_path(root, name)
    atomic_write_json(path, {"dataset": name, "generator": generator, "sizes": {k: int(v) for k, v in sizes.items()}})
    return path


def expected_size(name: str, split: str, root: str | Path) -> tuple[int, str]:
    """(expected item count of `split`, where the number comes from): a stand-in generator's
    declaration under `root` if there is one, else the official size (`OFFICIAL_SIZES`)."""
    meta = get_meta(name)
    split = SPLIT_ALIASES.get(split, split)
    meta.split(split)
    decl = expected_sizes_path(root, name)
    if decl.exists():
        try:
            data = json.loads(decl.read_text())
            return int(data["sizes"][split]), f"declared by {data['generator']} in {decl}"
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{decl}: no size for split {split!r} ({type(e).__name__}: {e})") from None
    return OFFICIAL_SIZES[name][split], "official size (fisa.data.registry.OFFICIAL_SIZES)"


def count_split(name: str, split: str, root: str | Path) -> int:
    """Items of a prepared split on disk: image files in its image folder; RefCOCO/+: refs of the split."""
    meta = get_meta(name)
    layout = meta.layout(split, root)
    if "referring" in meta.tasks:
        from fisa.data.datasets import load_refs

        path = Path(root) / layout.refs
        if not path.is_file():
            raise DatasetError(f"{name} {split}: refs file {path} is missing (create it with {meta.prepare_hint})")
        refs = load_refs(path)
        return sum(1 for r in refs if r.get("split") == layout.refs_split)
    folder = Path(root) / layout.image_dir
    if not folder.is_dir():
        raise DatasetError(f"{name} {split}: image folder {folder} is missing (create it with {meta.prepare_hint})")
    return sum(1 for e in os.scandir(folder) if e.name.endswith(layout.image_ext))


def check_split_size(name: str, split: str, found: int, root: str | Path, allow_subset: bool) -> dict:
    """Compare a split's item count with its expected size.

    Returns {split, expected, found, expected_from, subset}; a mismatch raises DatasetError
    naming the dataset, the count expected and the count found, unless `allow_subset`
    (then `subset` is True and the caller records it)."""
    expected, source = expected_size(name, split, root)
    unit = "refs" if "referring" in get_meta(name).tasks else "images"
    subset = int(found) != expected
    if subset and not allow_subset:
        raise DatasetError(f"{name} {split}: expected {expected} {unit} ({source}), found {found} under {root}: "
                           f"the prepared split is incomplete (prepare it again: {get_meta(name).prepare_hint}), "
                           f"or allow subsets explicitly (config eval.allow_subset: true / prepare --allow-subset)")
    return {"split": SPLIT_ALIASES.get(split, split), "unit": unit, "expected": expected, "found": int(found),
            "expected_from": source, "subset": subset}


def panoptic_gt(name: str, root: str | Path, split: str | None = None) -> tuple[Path, Path]:
    """(panoptic JSON, PNG folder) of `split` (default: the eval split) under `root`."""
    meta = get_meta(name)
    if "panoptic" not in meta.tasks:
        raise DatasetError(f"{name} has no panoptic ground truth (tasks: {', '.join(meta.tasks)})")
    p = meta.paths(split or meta.eval_split, root)
    return p["panoptic_json"], p["panoptic_dir"]


def describe(root: str | Path | None = None) -> list[dict]:
    """One row per dataset: classes, tasks, ignore label, eval-split paths and (with `root`)
    whether each path exists and the prepare marker is there."""
    rows = []
    for name in list_datasets():
        meta = get_meta(name)
        row = {"dataset": name, "classes": meta.num_classes, "things": sum(meta.thing), "tasks": list(meta.tasks),
               "ignore_label": meta.ignore_label, "eval_split": meta.eval_split,
               "paths": {k: str(v) for k, v in meta.layout(meta.eval_split, root).files().items()}}
        if root is not None:
            row["missing"] = [str(p) for p in meta.paths(meta.eval_split, root).values() if not p.exists()]
            row["prepared"] = marker_path(root, name).exists()
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    """`python -m fisa.data.registry [--root ROOT] [--json]`: the registry, and what is prepared under ROOT."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m fisa.data.registry", description=main.__doc__)
    p.add_argument("--root", help="data root to check ($DETECTRON2_DATASETS or the preset's data_root)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    rows = describe(args.root)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        state = "" if args.root is None else ("  prepared" if r["prepared"] else "  NOT prepared") + (
            f", missing: {', '.join(r['missing'])}" if r["missing"] else "")
        print(f"{r['dataset']:12s} {r['classes']:4d} classes ({r['things']} things)  {'/'.join(r['tasks']):18s} "
              f"ignore={r['ignore_label']:<5d} {r['eval_split']}: {r['paths']['image_dir']}{state}")
    return 0


if __name__ == "__main__":
    from fisa.utils.errors import run_cli

    run_cli(main)  # one `error: <file>: <what> — <fix>` line for a user-fixable error
