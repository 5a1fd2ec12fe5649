"""Synthetic stand-ins of every registry dataset, in the prepared on-disk formats (small preset).

`generate(root, seed=0, sizes=None)` writes, under `root` and in exactly the layout of
`fisa.data.registry` (the formats the prepare step writes), a small stand-in for coco,
ade150, ade847, pc59, pc459, mapillary, refcoco and refcocoplus, then each dataset's
`<root>/.fisa/<name>.prepare.done` marker (last, atomically). CLI:
`python -m fisa.data.synthetic --root R [--seed S] [--size NAME=N ...] [--sides MIN MAX]`.

Design (see docs/data.md): the stand-ins use the real class lists (same vocabulary sizes,
same code paths) but each image shows only classes of a small "active" set per dataset.
A class's look is a function of its NAME (`synthetic_scenes.appearance`), so a class that
the COCO stand-in (training) and an evaluation stand-in share by name looks the same there,
while every evaluation stand-in also shows classes the COCO stand-in never shows (open
vocabulary). Things are instances (shapes), stuff are regions (textures); the COCO stand-in
has crowd regions; void pixels appear everywhere; RefCOCO/+ have expressions with masks.
Deterministic from `seed`: two runs write byte-identical files.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from fisa.utils.io import atomic_path, atomic_write_json

from fisa.utils.markers import data_fingerprint, marker_path
from fisa.utils.panoptic_ids import id2rgb

from .registry import DatasetMeta, declare_expected_sizes, get_meta, list_datasets
from .synthetic_scenes import SceneClass, appearance, name_hash, render_scene

# Images per stand-in (keys: dataset names, plus coco_train). pc59 and pc459 share their
# images (one Pascal Context scene set labelled in both vocabularies), as do refcoco and
# refcocoplus (COCO train2014 images, as the real ones).
DEFAULT_SIZES = {"coco_train": 64, "coco": 12, "ade150": 12, "ade847": 10, "pc59": 10, "mapillary": 10,
                 "refcoco": 8}
SIZE_KEYS = tuple(DEFAULT_SIZES)
MIN_SIDE, MAX_SIDE = 64, 96
JPEG_QUALITY = 95

# The COCO stand-in's active classes (its training vocabulary), by display name.
COCO_THINGS = ("person", "car", "dog", "chair", "bottle", "truck")  # distinct looks (tested)
COCO_STUFF = ("sky", "tree", "grass", "road", "wall", "sea")
N_SHARED_THINGS, N_SHARED_STUFF, N_NOVEL = 3, 3, 4


class SyntheticError(ValueError):
    """A bad size/seed argument (the message names it)."""


def _rng(seed: int, *key: str) -> np.random.Generator:
    """A Generator seeded from (seed, key...): each dataset/split has its own stream."""
    h = hashlib.sha256(("/".join((str(seed),) + key)).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "big"))


def _size(rng: np.random.Generator, sides: tuple[int, int]) -> tuple[int, int]:
    lo, hi = sides
    return int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))


def _all_names(meta: DatasetMeta) -> set[str]:
    return {n.lower() for c in meta.classes for n in c}


def _render_thing(meta: DatasetMeta, i: int) -> bool:
    """How class i is drawn: as instances (panoptic thing flag; for semantic-only datasets,
    COCO's flag of the same name, else a name hash), so a name looks alike everywhere."""
    if "panoptic" in meta.tasks:
        return meta.thing[i]
    coco = get_meta("coco")
    name = meta.classes[i][0].lower()
    for j, c in enumerate(coco.classes):
        if c[0].lower() == name:
            return coco.thing[j]
    return name_hash(name) % 2 == 0


def active_classes(name: str) -> tuple[list[SceneClass], list[SceneClass]]:
    """(stuff, things) the stand-in of `name` shows: COCO's training set, or, for an evaluation
    set, up to 3+3 classes shared by name with it plus N_NOVEL classes whose names (and
    synonyms) are absent from the whole COCO vocabulary. Independent of the seed."""
    meta = get_meta(name)
    display = [c[0].lower() for c in meta.classes]
    if name == "coco":
        chosen = [display.index(n) for n in COCO_THINGS + COCO_STUFF]
    else:
        coco_active = set(COCO_THINGS + COCO_STUFF)
        shared_t = [i for i, n in enumerate(display) if n in coco_active and _render_thing(meta, i)]
        shared_s = [i for i, n in enumerate(display) if n in coco_active and not _render_thing(meta, i)]
        coco_names = _all_names(get_meta("coco"))
        novel = [i for i, c in enumerate(meta.classes) if not ({n.lower() for n in c} & coco_names)]
        novel.sort(key=lambda i: name_hash(display[i]))
        chosen = _distinct(meta, [], shared_t, N_SHARED_THINGS)
        chosen += _distinct(meta, chosen, shared_s, N_SHARED_STUFF)
        # Novel classes, half things half stuff where possible, with looks distinct from those chosen.
        want_t = N_NOVEL // 2
        picks_t = [i for i in novel if _render_thing(meta, i)]
        picks_s = [i for i in novel if not _render_thing(meta, i)]
        chosen += _distinct(meta, chosen, picks_t, want_t) + _distinct(meta, chosen, picks_s, N_NOVEL - want_t)
    stuff = [SceneClass(i, display[i], False) for i in chosen if not _render_thing(meta, i)]
    things = [SceneClass(i, display[i], True) for i in chosen if _render_thing(meta, i)]
    return stuff, things


def _distinct(meta: DatasetMeta, chosen: list[int], candidates: list[int], n: int) -> list[int]:
    """The first n candidates whose look differs from every class already chosen (and each other)."""
    keys = {appearance(meta.classes[i][0]).key(_render_thing(meta, i)) for i in chosen}
    out = []
    for i in candidates:
        k = appearance(meta.classes[i][0]).key(_render_thing(meta, i))
        if k not in keys:
            keys.add(k)
            out.append(i)
        if len(out) == n:
            break
    return out


# ---------------------------------------------------------------- file writers
def _save(array: np.ndarray, path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    kw = {"quality": JPEG_QUALITY} if fmt == "JPEG" else {}
    Image.fromarray(array).save(path, format=fmt, **kw)


def _semantic(seg: np.ndarray, segments, ignore: int, dtype, index_map=None) -> np.ndarray:
    """Segment map -> semantic label map (void -> ignore); index_map re-maps class indices (None = drop)."""
    out = np.full(seg.shape, ignore, dtype=dtype)
    for s in segments:
        idx = s.cls.index if index_map is None else index_map.get(s.cls.index)
        if idx is not None:
            out[seg == s.id] = idx
    return out


def _segments_info(seg: np.ndarray, segments, meta: DatasetMeta) -> list[dict]:
    info = []
    for s in segments:
        m = seg == s.id
        ys, xs = np.nonzero(m)
        info.append({"id": int(s.id), "category_id": int(meta.category_ids[s.cls.index]),
                     "iscrowd": int(s.iscrowd), "area": int(m.sum()),
                     "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]})
    return info


def _categories(meta: DatasetMeta) -> list[dict]:
    data = json.loads((Path(__file__).parent / "classes" / f"{meta.name}.json").read_text())
    return [{"id": int(c["id"]), "name": c["name"], "isthing": int(c["isthing"]),
             "color": list(appearance(c["names"][0]).colour)} for c in data["classes"]]


def _write_panoptic(meta: DatasetMeta, root: Path, split: str, n: int, seed: int, crowd_prob: float,
                    image_name, image_id, sides: tuple[int, int] = (MIN_SIDE, MAX_SIDE)) -> int:
    """A panoptic stand-in split: images, RGB-id PNGs + JSON, semantic maps."""
    lay = meta.layout(split, root)
    stuff, things = active_classes(meta.name)
    rng = _rng(seed, meta.name, split)
    images, annotations = [], []
    for k in range(n):
        h, w = _size(rng, sides)
        img, seg, segments = render_scene(rng, h, w, stuff, things, crowd_prob=crowd_prob)
        fname = image_name(k)
        stem = Path(fname).stem
        _save(img, root / lay.image_dir / fname, "JPEG")
        _save(id2rgb(seg), root / lay.panoptic_dir / f"{stem}.png", "PNG")
        _save(_semantic(seg, segments, meta.ignore_label, np.uint8), root / lay.sem_seg_dir / f"{stem}.png", "PNG")
        images.append({"id": image_id(k), "file_name": fname, "height": h, "width": w})
        annotations.append({"image_id": image_id(k), "file_name": f"{stem}.png",
                            "segments_info": _segments_info(seg, segments, meta)})
    atomic_write_json(root / lay.panoptic_json, {"images": images, "annotations": annotations,
                                                 "categories": _categories(meta)})
    return n


def _write_semantic(meta: DatasetMeta, root: Path, split: str, n: int, seed: int,
                    sides: tuple[int, int] = (MIN_SIDE, MAX_SIDE)) -> int:
    lay = meta.layout(split, root)
    stuff, things = active_classes(meta.name)
    rng = _rng(seed, meta.name, split)
    dtype = np.uint16 if lay.sem_seg_ext == ".tif" else np.uint8
    for k in range(n):
        h, w = _size(rng, sides)
        img, seg, segments = render_scene(rng, h, w, stuff, things)
        stem = f"{meta.name}_val_{k:06d}"
        _save(img, root / lay.image_dir / f"{stem}.jpg", "JPEG")
        _save(_semantic(seg, segments, meta.ignore_label, dtype), root / lay.sem_seg_dir / f"{stem}{lay.sem_seg_ext}",
              "TIFF" if lay.sem_seg_ext == ".tif" else "PNG")
    return n


def _write_pascal_context(root: Path, n: int, seed: int, sides: tuple[int, int] = (MIN_SIDE, MAX_SIDE)) -> int:
    """One scene set labelled in both vocabularies: PC-59's active classes (also in PC-459) plus
    two PC-459-only classes, which PC-59 labels as ignore (as the real 59-class maps do)."""
    m59, m459 = get_meta("pc59"), get_meta("pc459")
    to459 = {c[0].lower(): i for i, c in enumerate(m459.classes)}
    stuff59, things59 = active_classes("pc59")
    sc = [SceneClass(to459[c.name], c.name, c.thing) for c in stuff59 + things59 if c.name in to459]
    names59 = {c[0].lower() for c in m59.classes}
    extra = sorted((i for i, c in enumerate(m459.classes) if c[0].lower() not in names59
                    and not ({x.lower() for x in c} & _all_names(get_meta("coco")))),
                   key=lambda i: name_hash(m459.classes[i][0]))
    keys = {appearance(c.name).key(c.thing) for c in sc}
    for i in extra:
        c = SceneClass(i, m459.classes[i][0].lower(), _render_thing(m459, i))
        if appearance(c.name).key(c.thing) not in keys:
            sc.append(c)
            keys.add(appearance(c.name).key(c.thing))
        if len(sc) >= len(stuff59) + len(things59) + 2:
            break
    to59 = {to459[n.lower()]: i for i, n in enumerate(m59.class_names) if n.lower() in to459}  # 459 idx -> 59 idx
    stuff = [c for c in sc if not c.thing]
    things = [c for c in sc if c.thing]
    lay59, lay459 = m59.layout("val", root), m459.layout("val", root)
    rng = _rng(seed, "pascal_context", "val")
    for k in range(n):
        h, w = _size(rng, sides)
        img, seg, segments = render_scene(rng, h, w, stuff, things)
        stem = f"2008_{k:06d}"
        _save(img, root / lay59.image_dir / f"{stem}.jpg", "JPEG")
        _save(_semantic(seg, segments, m59.ignore_label, np.uint8, to59), root / lay59.sem_seg_dir / f"{stem}.png", "PNG")
        _save(_semantic(seg, segments, m459.ignore_label, np.uint16), root / lay459.sem_seg_dir / f"{stem}.tif", "TIFF")
    return n, sorted(c.name for c in sc)


# ---------------------------------------------------------------- referring
def _expressions(s, others, plus: bool) -> list[str]:
    """Sentences that single out segment `s` among `others` (RefCOCO: may use location;
    RefCOCO+: no location words, size instead, as the dataset's rule)."""
    a = appearance(s.cls.name)
    same = [o for o in others if o.id != s.id and o.cls.index == s.cls.index]
    if not same:
        return [f"the {a.colour_name} {a.shape}", f"{s.cls.name}", f"{a.colour_name} {s.cls.name}"]
    if plus:
        size = "big" if s.radius >= max(o.radius for o in same) else "small"
        return [f"the {size} {a.colour_name} {a.shape}", f"{size} {s.cls.name}"]
    side = "left" if s.cx <= min(o.cx for o in same) else ("right" if s.cx >= max(o.cx for o in same) else "middle")
    return [f"the {a.colour_name} {a.shape} on the {side}", f"{side} {s.cls.name}"]


def _write_referring(root: Path, n: int, seed: int,
                     sides: tuple[int, int] = (MIN_SIDE, MAX_SIDE)) -> dict[str, int]:
    """COCO train2014 images with thing instances; refcoco and refcoco+ refs + instances.json."""
    from pycocotools import mask as mask_utils

    coco = get_meta("coco")
    stuff, things = active_classes("coco")
    rng = _rng(seed, "refcoco", "train2014")
    images, anns, objects = [], [], []
    img_dir = root / "coco" / "train2014"
    ann_id = 1
    for k in range(n):
        h, w = _size(rng, sides)
        img, seg, segments = render_scene(rng, h, w, stuff, things, n_things=(2, 4), void_prob=0.2)
        image_id = 500000 + k
        fname = f"COCO_train2014_{image_id:012d}.jpg"
        _save(img, img_dir / fname, "JPEG")
        images.append({"id": image_id, "file_name": fname, "height": h, "width": w})
        objs = [s for s in segments if s.cls.thing and not s.iscrowd]
        # Split: most images to val (the evaluated split), the last two to train.
        split = "train" if k >= max(n - 2, 1) else "val"
        for s in objs:
            m = np.asfortranarray((seg == s.id).astype(np.uint8))
            rle = mask_utils.encode(m)
            ys, xs = np.nonzero(m)
            anns.append({"id": ann_id, "image_id": image_id, "category_id": int(coco.category_ids[s.cls.index]),
                         "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                         "area": int(m.sum()), "iscrowd": 0,
                         "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]})
            objects.append((s, objs, ann_id, image_id, fname, split))
            ann_id += 1
    cats = [c for c in _categories(coco) if c["isthing"]]
    for folder, plus in (("refcoco", False), ("refcoco+", True)):
        refs, sent_id = [], 0
        for ref_id, (s, objs, aid, image_id, fname, split) in enumerate(objects):
            sents = []
            for text in _expressions(s, objs, plus):
                sents.append({"sent_id": sent_id, "sent": text, "raw": text, "tokens": text.split()})
                sent_id += 1
            refs.append({"ref_id": ref_id, "ann_id": aid, "image_id": image_id, "split": split,
                         "category_id": int(coco.category_ids[s.cls.index]),
                         "file_name": f"{Path(fname).stem}_{aid}.jpg", "sentences": sents,
                         "sent_ids": [x["sent_id"] for x in sents]})
        out = root / "refcoco" / folder
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "refs(unc).p") as tmp:
            tmp.write_bytes(pickle.dumps(refs, protocol=2))
        atomic_write_json(out / "instances.json", {"images": images, "annotations": anns, "categories": cats})
    per_split = {s: 0 for s in ("train", "val", "testA", "testB")}  # refs per split (testA/B: none here)
    for *_, split in objects:
        per_split[split] += 1
    return per_split


# ---------------------------------------------------------------- entry points
def _check_sizes(sizes: Optional[dict]) -> dict:
    out = dict(DEFAULT_SIZES)
    for k, v in (sizes or {}).items():
        if k == "pc459" or k == "refcocoplus":
            raise SyntheticError(f"size key {k!r}: its images are shared with "
                                 f"{'pc59' if k == 'pc459' else 'refcoco'}; set that one")
        if k not in out:
            raise SyntheticError(f"unknown size key {k!r}; known: {', '.join(SIZE_KEYS)}")
        if not isinstance(v, int) or v < 1:
            raise SyntheticError(f"size {k}={v!r}: must be a positive integer")
        out[k] = v
    if out["refcoco"] < 2:
        raise SyntheticError("size refcoco must be >= 2 (val and train images)")
    return out


def generate(root: str | Path, seed: int = 0, sizes: Optional[dict] = None,
             sides: tuple[int, int] = (MIN_SIDE, MAX_SIDE)) -> dict:
    """Write every registry dataset's stand-in under `root`, then the prepare markers. Returns counts.

    `sides`: the range of image heights and widths (the small preset's 64-96 px by default; the
    rehearsal preset's COCO/ADE-like 480-640 px)."""
    root = Path(root)
    n = _check_sizes(sizes)
    if not (len(sides) == 2 and all(isinstance(v, int) and v >= 32 for v in sides) and sides[0] <= sides[1]):
        raise SyntheticError(f"sides {list(sides)!r}: expected [min, max] integers, 32 <= min <= max")
    counts = {}
    coco = get_meta("coco")
    counts["coco"] = {
        "train": _write_panoptic(coco, root, "train", n["coco_train"], seed, 0.3,
                                 lambda k: f"{k + 1:012d}.jpg", lambda k: k + 1, sides),
        "val": _write_panoptic(coco, root, "val", n["coco"], seed, 0.3,
                               lambda k: f"{100000 + k:012d}.jpg", lambda k: 100000 + k, sides)}
    counts["ade150"] = {"val": _write_panoptic(get_meta("ade150"), root, "val", n["ade150"], seed, 0.0,
                                               lambda k: f"ADE_val_{k + 1:08d}.jpg",
                                               lambda k: f"ADE_val_{k + 1:08d}", sides)}
    counts["ade847"] = {"val": _write_semantic(get_meta("ade847"), root, "val", n["ade847"], seed, sides)}
    pc, pc_names = _write_pascal_context(root, n["pc59"], seed, sides)
    counts["pc59"] = counts["pc459"] = {"val": pc}
    counts["mapillary"] = {"val": _write_panoptic(get_meta("mapillary"), root, "val", n["mapillary"], seed, 0.0,
                                                  lambda k: f"synthetic_{k:06d}.jpg", lambda k: f"synthetic_{k:06d}", sides)}
    refs = _write_referring(root, n["refcoco"], seed, sides)
    counts["refcoco"] = counts["refcocoplus"] = {"refs": sum(refs.values()), **refs}
    for name in list_datasets():  # markers last: a dataset counts as prepared only when all is written
        if name in ("pc59", "pc459"):
            shown = pc_names
        elif name in ("refcoco", "refcocoplus"):
            shown = sorted(c.name for c in active_classes("coco")[1])
        else:
            shown = sorted(c.name for group in active_classes(name) for c in group)
        # The stand-ins' split sizes replace the official ones in the size checks (fisa.data.registry).
        declare_expected_sizes(root, name, {k: v for k, v in counts[name].items() if k != "refs"},
                               "fisa.data.synthetic")
        atomic_write_json(marker_path(root, name), {
            "dataset": name, "stage": "prepare", "source": "synthetic", "generator": "fisa.data.synthetic",
            "seed": seed, "counts": counts[name], "classes_shown": shown,
            "fingerprint": data_fingerprint(name, root)})  # what the marker vouches for (fisa.utils.markers)
    return counts


def parse_sizes(items: list[str]) -> dict:
    """['coco_train=32', ...] -> {'coco_train': 32}; errors name the bad item."""
    out = {}
    for it in items or []:
        k, sep, v = it.partition("=")
        if not sep or not v.strip().lstrip("-").isdigit():
            raise SyntheticError(f"--size {it!r}: expected NAME=N")
        out[k.strip()] = int(v)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fisa.data.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, help="data root to write under (the small preset's data_root)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", action="append", default=[], metavar="NAME=N",
                   help=f"images per stand-in, NAME in {', '.join(SIZE_KEYS)} (repeatable)")
    p.add_argument("--sides", type=int, nargs=2, default=[MIN_SIDE, MAX_SIDE], metavar=("MIN", "MAX"),
                   help=f"range of image heights and widths (default {MIN_SIDE} {MAX_SIDE})")
    args = p.parse_args(argv)
    try:
        counts = generate(args.root, args.seed, parse_sizes(args.size), tuple(args.sides))
    except SyntheticError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, c in counts.items():
        print(f"{name}: {c}")
    return 0


if __name__ == "__main__":
    from fisa.utils.errors import run_cli

    run_cli(main)  # one `error: <file>: <what> — <fix>` line for a user-fixable error
