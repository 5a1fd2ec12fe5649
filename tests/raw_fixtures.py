"""Tiny raw inputs in each benchmark's ORIGINAL distribution format, for offline tests.

`write_raw_sources(out_dir, seed)` writes one miniature of every file listed in
`fisa/data/sources.yaml` (same file names, same archive layouts: COCO's image zips and
the panoptic zip with its nested PNG zips, ADEChallengeData2016.zip and the instance
tar, the ADE20K full release with `index_ade20k.pkl` and `_seg.png` files, VOC2010's tar,
PASCAL in Detail's `trainval_merged.json` with RLE masks, Pascal Context's `.mat` label
maps, the refer toolkit's zips with `refs(unc).p` + `instances.json`, a Mapillary v1.2 zip)
and returns the raw label arrays it encoded, so tests can compute the expected prepared
outputs independently. A test serves `out_dir` over HTTP and points a sources file at it
(`sources_for(base_url)`).
"""
from __future__ import annotations

import io
import json
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _jpg(rng: np.random.Generator, h: int, w: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _tar(path: Path, members: dict[str, bytes], mode: str = "w") -> None:
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _blocks(rng: np.random.Generator, h: int, w: int, values: list[int], block: int = 2) -> np.ndarray:
    """A label map of random `block`x`block` tiles drawn from `values`."""
    tiles = rng.choice(values, size=(-(-h // block), -(-w // block)))
    return np.kron(tiles, np.ones((block, block), dtype=tiles.dtype))[:h, :w]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids -> COCO panoptic RGB (written independently of fisa.data.prepare)."""
    ids = ids.astype(np.int64)
    return np.stack([ids % 256, (ids // 256) % 256, (ids // 65536) % 256], -1).astype(np.uint8)


# --------------------------------------------------------------------------- COCO


COCO_CATEGORIES = [  # non-contiguous ids, things and stuff, as COCO panoptic
    {"id": 1, "name": "person", "isthing": 1, "supercategory": "person", "color": [220, 20, 60]},
    {"id": 3, "name": "car", "isthing": 1, "supercategory": "vehicle", "color": [0, 0, 142]},
    {"id": 92, "name": "banner", "isthing": 0, "supercategory": "textile", "color": [255, 255, 128]},
    {"id": 184, "name": "tree-merged", "isthing": 0, "supercategory": "plant", "color": [107, 142, 35]},
    {"id": 200, "name": "rug-merged", "isthing": 0, "supercategory": "floor", "color": [153, 102, 51]},
]


def _coco_panoptic(rng, split: str, n: int, first_id: int):
    images, annotations, pngs, truth = [], [], {}, {}
    for k in range(n):
        iid = first_id + k
        h, w = 6 + k, 8
        ids = _blocks(rng, h, w, [0, 11, 12, 13, 300, 70000], block=2)  # 0 = VOID
        segs = []
        cats = {11: 1, 12: 1, 13: 3, 300: 92, 70000: 184 if k % 2 == 0 else 200}
        for sid, cat in cats.items():
            area = int((ids == sid).sum())
            if area:
                segs.append({"id": sid, "category_id": cat, "iscrowd": int(sid == 13), "area": area,
                             "bbox": [0, 0, 1, 1]})
        name = f"{iid:012d}"
        images.append({"id": iid, "file_name": f"{name}.jpg", "height": h, "width": w})
        annotations.append({"image_id": iid, "file_name": f"{name}.png", "segments_info": segs})
        pngs[f"panoptic_{split}/{name}.png"] = _png(id2rgb(ids))
        truth[name] = {"ids": ids, "segments": segs}
    js = {"images": images, "annotations": annotations, "categories": COCO_CATEGORIES,
          "info": {}, "licenses": []}
    return js, pngs, truth


def write_coco(out: Path, rng) -> dict:
    truth = {}
    outer = {}
    for split, n, first in (("val2017", 2, 139), ("train2017", 2, 9)):
        js, pngs, t = _coco_panoptic(rng, split, n, first)
        truth[split] = t
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in pngs.items():
                zf.writestr(name, data)
        outer[f"annotations/panoptic_{split}.json"] = json.dumps(js).encode()
        outer[f"annotations/panoptic_{split}.zip"] = buf.getvalue()
        _zip(out / f"{split}.zip", {f"{split}/{im['file_name']}": _jpg(rng, im["height"], im["width"])
                                    for im in js["images"]})
    outer["annotations/panoptic_coco_categories.json"] = json.dumps(COCO_CATEGORIES).encode()
    _zip(out / "panoptic_annotations_trainval2017.zip", outer)
    # train2014 images for the refer fixtures
    _zip(out / "train2014.zip", {f"train2014/COCO_train2014_{i:012d}.jpg": _jpg(rng, 10, 12) for i in (25, 30, 42)})
    return truth


# --------------------------------------------------------------------------- ADE20K-150


# instance class -> ADE-150 class (1-based) -> full-ADE20K id, with a repeated row as in the real table
ADE_MAPPING = [(1, 13, 1831), (2, 21, 401), (3, 20, 471), (3, 20, 2679)]


def write_ade150(out: Path, rng) -> dict:
    members, inst, truth = {}, {}, {}
    info = "Idx\tRatio\tTrain\tVal\tName\n" + "".join(f"{i}\t0.01\t1\t1\tclass{i}\n" for i in range(1, 151))
    members["ADEChallengeData2016/objectInfo150.txt"] = info.encode()
    members["ADEChallengeData2016/sceneCategories.txt"] = b""
    for split, prefix in (("validation", "val"), ("training", "train")):
        for k in (1, 2):
            stem = f"ADE_{prefix}_{k:08d}"
            h, w = 8, 10
            sem = _blocks(rng, h, w, [0, 1, 3, 13, 21, 20], block=2).astype(np.uint8)  # 13/21/20 are things
            ins = np.zeros((h, w, 3), np.uint8)
            # instances: person (instance class 1) on part of the 13-pixels, a car over some stuff pixels
            person = sem == 13
            person[:, : w // 2] = False
            ins[person, 0], ins[person, 1] = 1, 1
            car = np.zeros((h, w), bool)
            car[0:2, 6:10] = True  # overlaps whatever semantic labels are there (the reference pastes over)
            ins[car, 0], ins[car, 1] = 2, 2
            members[f"ADEChallengeData2016/images/{split}/{stem}.jpg"] = _jpg(rng, h, w)
            members[f"ADEChallengeData2016/annotations/{split}/{stem}.png"] = _png(sem)
            inst[f"annotations_instance/{split}/{stem}.png"] = _png(ins)
            truth[stem] = {"sem": sem, "ins": ins}
    _zip(out / "ADEChallengeData2016.zip", members)
    _tar(out / "annotations_instance.tar", inst)
    (out / "ade20k_instance_catid_mapping.txt").write_text(  # the real file's header and double tabs
        "Instacne100\tSceneParse150\tFullADE20K\n" + "".join(f"{a}\t\t{b}\t\t{n}\n" for a, b, n in ADE_MAPPING))
    return truth


# --------------------------------------------------------------------------- ADE20K-847


ADE847_TABLE = [  # full-release class id -> train id (a miniature of the reference table)
    {"name": "wall", "id": 2978, "trainId": 0},
    {"name": "sky", "id": 2420, "trainId": 1},
    {"name": "person, individual", "id": 1831, "trainId": 2},
    {"name": "adding machine", "id": 3148, "trainId": 3},
]


def _ade_seg_rgb(classes: np.ndarray) -> np.ndarray:
    """Encode full-release class ids into an ADE `_seg.png`: R = class // 256 * 10, G = class % 256."""
    rgb = np.zeros(classes.shape + (3,), np.uint8)
    rgb[..., 0] = (classes // 256) * 10 + (classes % 3)  # R % 10 carries nothing for the class (instance bits)
    rgb[..., 1] = classes % 256
    rgb[..., 2] = 7  # instance channel, ignored
    return rgb


def write_ade847(out: Path, rng) -> dict:
    members, truth, folders, files = {}, {}, [], []
    shapes = {"ADE_val_00000001.jpg": (9, 11), "ADE_val_00000002.jpg": (520, 640),  # the second is resized
              "ADE_train_00000001.jpg": (6, 6)}
    for fname, (h, w) in shapes.items():
        split = "validation" if "_val_" in fname else "training"
        folder = f"ADE20K_2021_17_01/images/ADE/{split}/home_or_hotel/bedroom"
        classes = _blocks(rng, h, w, [0, 2978, 2420, 1831, 3148, 77], block=max(1, min(h, w) // 4))
        members[f"{folder}/{fname}"] = _jpg(rng, h, w) if h < 100 else _smooth_jpg(h, w)
        members[f"{folder}/{fname[:-4]}_seg.png"] = _png(_ade_seg_rgb(classes))
        folders.append(folder)
        files.append(fname)
        truth[fname] = classes
    index = {"folder": folders, "filename": files, "objectnames": ["-"] * 3688}
    members["ADE20K_2021_17_01/index_ade20k.pkl"] = pickle.dumps(index)
    members["ADE20K_2021_17_01/objects.txt"] = b""
    _zip(out / "ADE20K_2021_17_01.zip", members)
    (out / "prepare_ade20k_full_sem_seg.py").write_text(
        '"""miniature of the reference script: the table is parsed, never run"""\nimport os\n\n'
        f"ADE20K_SEM_SEG_FULL_CATEGORIES = {ADE847_TABLE!r}\n\nraise SystemExit('never executed')\n")
    return truth


def _smooth_jpg(h: int, w: int) -> bytes:
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 255 // (h + w))], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG")
    return buf.getvalue()


# --------------------------------------------------------------------------- Pascal Context


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def write_pascal_context(out: Path, rng) -> dict:
    import scipy.io

    images, annos, voc, mats, truth = [], [], {}, {}, {}
    ann_id = 1
    for k, (stem, phase) in enumerate((("2008_000002", "train"), ("2008_000123", "val"), ("2010_001234", "val"))):
        h, w = 7, 9
        image_id = int(stem.replace("_", ""))
        images.append({"image_id": image_id, "file_name": f"{stem}.jpg", "height": h, "width": w, "phase": phase})
        voc[f"VOCdevkit/VOC2010/JPEGImages/{stem}.jpg"] = _jpg(rng, h, w)
        masks = []
        for cat in (2, 259, 458, 22):  # overlapping annotations: later ones win
            m = rng.random((h, w)) < 0.35
            masks.append((cat, m))
            annos.append({"id": ann_id, "image_id": image_id, "category_id": cat, "segmentation": _rle(m),
                          "iscrowd": 0, "area": int(m.sum()), "parts": []})
            ann_id += 1
        label = _blocks(rng, h, w, [0, 1, 17, 459], block=1).astype(np.uint16)
        buf = io.BytesIO()
        scipy.io.savemat(buf, {"LabelMap": label})
        mats[f"trainval/{stem}.mat"] = buf.getvalue()
        truth[stem] = {"masks": masks, "label459": label, "phase": phase}
    # one image not in the JSON at all (VOC has more images than Pascal Context)
    voc["VOCdevkit/VOC2010/JPEGImages/2007_000027.jpg"] = _jpg(rng, 5, 5)
    voc["VOCdevkit/VOC2010/ImageSets/Main/train.txt"] = b"2008_000002\n"
    _tar(out / "VOCtrainval_03-May-2010.tar", voc)
    cats = [{"category_id": c, "name": f"c{c}", "supercategory": "object", "onlysemantic": 0, "parts": []}
            for c in (2, 22, 259, 458)]
    merged = {"info": {}, "images": images, "annos_segmentation": annos, "annos_occlusion": [],
              "annos_boundary": [], "categories": cats, "parts": [], "annos_joints": []}
    (out / "trainval_merged.json").write_text(json.dumps(merged))
    _tar(out / "trainval.tar.gz", mats, mode="w:gz")
    return truth


# --------------------------------------------------------------------------- RefCOCO / RefCOCO+


def write_refer(out: Path, rng) -> dict:
    truth = {}
    for zip_name, folder in (("refcoco.zip", "refcoco"), ("refcoco+.zip", "refcoco+")):
        images = [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "height": 10, "width": 12}
                  for i in (25, 30, 42)]
        anns = [{"id": 1000 + i, "image_id": im["id"], "category_id": 1, "iscrowd": 0,
                 "segmentation": [[1.0, 1.0, 8.0 + i, 1.0, 8.0 + i, 7.0, 1.0, 7.0]], "area": 42.0,
                 "bbox": [1, 1, 7 + i, 6]} for i, im in enumerate(images)]
        refs = [{"ref_id": r, "ann_id": anns[r % 3]["id"], "image_id": anns[r % 3]["image_id"],
                 "split": ("train", "val", "testA", "testB")[r % 4], "category_id": 1,
                 "file_name": f"COCO_train2014_{anns[r % 3]['image_id']:012d}_{anns[r % 3]['id']}.jpg",
                 "sent_ids": [10 * r, 10 * r + 1],
                 "sentences": [{"sent_id": 10 * r, "sent": f"the thing number {r}", "raw": f"The thing #{r}",
                                "tokens": ["the", "thing", "number", str(r)]},
                               {"sent_id": 10 * r + 1, "sent": "left one", "raw": "left one", "tokens": ["left", "one"]}]}
                for r in range(8)]
        instances = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
        members = {f"{folder}/refs(unc).p": pickle.dumps(refs, protocol=2),
                   f"{folder}/instances.json": json.dumps(instances).encode()}
        if folder == "refcoco":
            members[f"{folder}/refs(google).p"] = pickle.dumps(refs, protocol=2)
        _zip(out / zip_name, members)
        truth[folder] = refs
    return truth


# --------------------------------------------------------------------------- Mapillary


def write_mapillary(out: Path, rng) -> dict:
    members = {"config.json": b"{}"}
    anns = []
    for k in (1, 2):
        stem = f"img{k:03d}"
        members[f"validation/images/{stem}.jpg"] = _jpg(rng, 6, 8)
        members[f"validation/labels/{stem}.png"] = _png(_blocks(rng, 6, 8, [0, 19, 65], 2).astype(np.uint8))
        members[f"validation/panoptic/{stem}.png"] = _png(id2rgb(_blocks(rng, 6, 8, [0, 5, 6], 2)))
        members[f"validation/instances/{stem}.png"] = _png(np.zeros((6, 8), np.uint8))
        anns.append({"image_id": stem, "file_name": f"{stem}.png", "segments_info": []})
    cats = [{"id": i + 1, "name": f"c{i}", "isthing": int(i >= 60), "supercategory": "x"} for i in range(65)]
    members["validation/panoptic/panoptic_2018.json"] = json.dumps(
        {"images": [{"id": a["image_id"], "file_name": a["image_id"] + ".jpg"} for a in anns],
         "annotations": anns, "categories": cats}).encode()
    _zip(out / "mapillary-vistas-dataset_public_v1.2.zip", members)
    return {}


# --------------------------------------------------------------------------- all


def write_raw_sources(out_dir: str | Path, seed: int = 0) -> dict:
    """Write every miniature raw file into `out_dir`; return {dataset: raw arrays used}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    return {"coco": write_coco(out, rng), "ade150": write_ade150(out, rng), "ade847": write_ade847(out, rng),
            "pascal_context": write_pascal_context(out, rng), "refer": write_refer(out, rng),
            "mapillary": write_mapillary(out, rng)}


def sources_for(base_url: str, sources_path: str | Path | None = None) -> dict:
    """The real sources file with every URL replaced by `<base_url>/<file name>` and the checksums
    dropped (tests pin them explicitly with `md5_of`), so tests run the real code."""
    import yaml

    from fisa.data.download import DEFAULT_SOURCES

    data = yaml.safe_load(Path(sources_path or DEFAULT_SOURCES).read_text())
    for spec in data["datasets"].values():
        for f in spec["files"]:
            f.pop("md5", None)
            f.pop("sha256", None)
            if not f.get("manual"):
                f["urls"] = [f"{base_url.rstrip('/')}/{f['name']}"]
    return data


def md5_of(path: str | Path) -> str:
    """md5 of a file (tests pin 'published' checksums of the miniatures with it)."""
    import hashlib

    return hashlib.md5(Path(path).read_bytes()).hexdigest()


# Split sizes of the prepared miniatures (images; RefCOCO/+: refs), declared to the size checks
# of fisa.data.prepare the way fisa.data.synthetic declares its stand-ins' sizes.
MINIATURE_SIZES = {
    "coco": {"train": 2, "val": 2}, "ade150": {"train": 2, "val": 2}, "ade847": {"train": 1, "val": 2},
    "pc59": {"train": 1, "val": 2}, "pc459": {"train": 1, "val": 2}, "mapillary": {"val": 2},
    "refcoco": {"train": 2, "val": 2, "testA": 2, "testB": 2},
    "refcocoplus": {"train": 2, "val": 2, "testA": 2, "testB": 2},
}


def declare_miniature_sizes(root: str | Path, names=None) -> None:
    """Declare the miniatures' split sizes under `root` (fisa.data.registry.declare_expected_sizes)."""
    from fisa.data.registry import declare_expected_sizes

    for name in names or MINIATURE_SIZES:
        declare_expected_sizes(root, name, MINIATURE_SIZES[name], "tests/raw_fixtures.py")
