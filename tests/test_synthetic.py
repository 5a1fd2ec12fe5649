"""The synthetic stand-ins: real formats read back through the loaders, the placed masks and
labels, open vocabulary, crowd/void, referring expressions, determinism, CLI."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from fisa.data import synthetic as S
from fisa.data.datasets import build_dataset
from fisa.data.registry import get_meta, list_datasets, panoptic_gt
from fisa.utils.markers import marker_path
from fisa.data.synthetic_scenes import COLOURS, appearance

SMALL = {"coco_train": 6, "coco": 4, "ade150": 4, "ade847": 3, "pc59": 3, "mapillary": 3, "refcoco": 4}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("synthetic")
    S.generate(r, seed=0)
    return r


def _digest(root) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_registry_dataset_has_a_prepared_stand_in(root):
    for name in list_datasets():
        marker = json.loads(marker_path(root, name).read_text())
        assert marker["dataset"] == name and marker["source"] == "synthetic" and marker["classes_shown"]
        meta = get_meta(name)
        ds = build_dataset(name, meta.eval_split, root, require_marker=True)
        assert 8 <= len(ds) <= 30, (name, len(ds))
        item = ds[0]
        h, w = item["image"].shape[1:]
        assert 64 <= h <= 96 and 64 <= w <= 96
    assert len(build_dataset("coco", "train", root)) == 64


def test_the_prepare_step_validates_the_synthetic_tree(root):
    from fisa.data.prepare import PREPARERS

    assert set(PREPARERS) == set(list_datasets())
    for name, (_, validate) in PREPARERS.items():
        assert validate(root), name  # raises PrepareError naming the file on any mismatch


@pytest.mark.parametrize("name,image_name,image_id", [
    ("coco", lambda k: f"{100000 + k:012d}.jpg", lambda k: 100000 + k),
    ("ade150", lambda k: f"ADE_val_{k + 1:08d}.jpg", lambda k: f"ADE_val_{k + 1:08d}"),
    ("mapillary", lambda k: f"synthetic_{k:06d}.jpg", lambda k: f"synthetic_{k:06d}"),
])
def test_panoptic_files_agree_with_the_loader_and_with_themselves(root, name, image_name, image_id):
    """Decode the written panopticapi files by hand (id = R + 256 G + 256^2 B; segments_info;
    contiguous index = rank of the category id among the JSON's categories) and compare with what the loader reads; each segment's area and bbox
    in the JSON match its pixels; the semantic map is the segments' classes, ignore on void."""
    meta = get_meta(name)
    gt_json, gt_dir = panoptic_gt(name, root)
    gt = json.loads(gt_json.read_text())
    index = {cid: i for i, cid in enumerate(sorted(c["id"] for c in gt["categories"]))}
    assert len(index) == len(meta.classes)
    ds = build_dataset(name, "val", root)
    assert len(ds) == len(gt["annotations"])
    crowd_seen = void_seen = False
    for k, ann in enumerate(sorted(gt["annotations"], key=lambda a: a["file_name"])):
        item = ds[k]
        assert item["file_name"] == image_name(k) and item["image_id"] == image_id(k) == ann["image_id"]
        rgb = np.asarray(Image.open(gt_dir / ann["file_name"]), dtype=np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
        segs = ann["segments_info"]
        assert set(np.unique(ids).tolist()) - {0} == {s["id"] for s in segs}
        assert item["labels"].tolist() == [index[s["category_id"]] for s in segs]
        assert item["iscrowd"].tolist() == [bool(s["iscrowd"]) for s in segs]
        crowd_seen |= any(s["iscrowd"] for s in segs)
        expect = np.full(ids.shape, meta.ignore_label)
        for s, m in zip(segs, item["masks"]):
            pixels = ids == s["id"]
            assert torch.equal(m, torch.from_numpy(pixels)) and s["area"] == pixels.sum()
            ys, xs = np.nonzero(pixels)
            assert s["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            expect[pixels] = index[s["category_id"]]
        assert (item["sem_seg"].numpy() == expect).all()
        void_seen |= bool((ids == 0).any())
    assert void_seen and crowd_seen == (name == "coco")  # only the COCO stand-in has crowd regions


def test_semantic_round_trip_and_pascal_context_vocabularies(root):
    m59, m459 = get_meta("pc59"), get_meta("pc459")
    d59, d459 = build_dataset("pc59", "val", root), build_dataset("pc459", "val", root)
    assert [d59[k]["file_name"] for k in range(len(d59))] == [d459[k]["file_name"] for k in range(len(d459))]
    seen_ignored_459_only = False
    for k in range(len(d59)):
        s59, s459 = d59[k]["sem_seg"], d459[k]["sem_seg"]
        assert torch.equal(s59 == 255, (s459 == 65535) | (s59 == 255))
        for c in torch.unique(s459).tolist():
            if c == 65535:
                continue
            name = m459.class_names[c]
            on59 = torch.unique(s59[s459 == c]).tolist()
            if name in m59.class_names:  # same name -> the 59-class index of that name
                assert on59 == [m59.class_names.index(name)]
            else:  # PC-459-only classes are ignored in the 59-class maps
                assert on59 == [255]
                seen_ignored_459_only = True
    assert seen_ignored_459_only
    ade = build_dataset("ade847", "val", root)[0]
    raw = np.asarray(Image.open(root / "ADE20K_2021_17_01/annotations_detectron2/validation" /
                                (ade["image_id"] + ".tif")))
    assert raw.dtype == np.uint16 and ade["sem_seg"].tolist() == raw.astype(np.int64).tolist()


def test_open_vocabulary_shared_and_novel_classes(root):
    coco_stuff, coco_things = S.active_classes("coco")
    train_names = {c.name for c in coco_stuff + coco_things}
    coco_vocab = {n.lower() for c in get_meta("coco").classes for n in c}
    for name in ("ade150", "ade847", "pc59", "mapillary"):
        shown = set(json.loads(marker_path(root, name).read_text())["classes_shown"])
        shared, novel = shown & train_names, shown - train_names
        assert len(shared) >= 3 and len(novel) >= 3, (name, shown)
        vocab = get_meta("pc459" if name == "pc59" else name).classes  # PC scenes also show PC-459-only classes
        for n in novel:  # never in the training vocabulary, under any synonym
            syn = next(c for c in vocab if c[0].lower() == n)
            assert not {s.lower() for s in syn} & coco_vocab, (name, n)


def test_classes_shown_together_look_different():
    for name in ("coco", "ade150", "ade847", "pc59", "pc459", "mapillary"):
        stuff, things = S.active_classes(name)
        keys = [appearance(c.name).key(c.thing) for c in stuff + things]
        assert len(keys) == len(set(keys)) >= 8, (name, keys)


def test_a_class_looks_the_same_in_training_and_evaluation_stand_ins(root):
    """Mean colour of 'car' pixels in the COCO train stand-in and the ADE-150 one agree."""
    def mean_colour(name, split, cls_name, n=12):
        meta, ds = get_meta(name), build_dataset(name, split, root)
        idx = meta.class_names.index(cls_name)
        px = [it["image"][:, m].float() for it in (ds[k] for k in range(min(n, len(ds))))
              for l, m in zip(it["labels"], it["masks"]) if l == idx]
        return torch.cat(px, 1).mean(1) if px else None
    a, b = mean_colour("coco", "train", "car"), mean_colour("ade150", "val", "car")
    assert a is not None and b is not None
    assert (a - b).abs().max() < 12 and (a - torch.tensor(appearance("car").colour).float()).abs().max() < 12


def test_crowd_and_void_are_present(root):
    ds = build_dataset("coco", "train", root)
    crowd = sum(int(ds[k]["iscrowd"].sum()) for k in range(len(ds)))
    assert crowd >= 5
    js = json.loads((root / "coco/annotations/panoptic_train2017.json").read_text())
    assert {s["iscrowd"] for a in js["annotations"] for s in a["segments_info"]} == {0, 1}
    assert len(js["categories"]) == 133
    void = sum(int((build_dataset("ade150", "val", root)[k]["sem_seg"] == 255).sum()) for k in range(12))
    assert void > 0


def test_referring_expressions_single_out_their_masks(root):
    for name, plus in (("refcoco", False), ("refcocoplus", True)):
        ds = build_dataset(name, "val", root)
        assert len(ds) >= 8
        for k in range(len(ds)):
            it = ds[k]
            assert it["mask"].any() and it["mask"].shape == it["image"].shape[1:]
            assert it["expressions"] and all(isinstance(e, str) and e for e in it["expressions"])
            words = {w for e in it["expressions"] for w in e.split()}
            if plus:
                assert not words & {"left", "right", "middle"}  # RefCOCO+ has no location words
        # the mask's colour is the colour the expression names
        it = ds[0]
        colour = next(w for w in it["expressions"][0].split() if w in COLOURS)
        mean = it["image"][:, it["mask"]].float().mean(1)
        assert (mean - torch.tensor(COLOURS[colour]).float()).abs().max() < 40
    assert len(build_dataset("refcoco", "train", root)) >= 1


def test_two_runs_are_byte_identical_and_the_seed_matters(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    S.generate(a, seed=1, sizes=SMALL)
    S.generate(b, seed=1, sizes=SMALL)
    S.generate(c, seed=2, sizes=SMALL)
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert da == db and len(da) > 50
    assert da.keys() == dc.keys() and da != dc


def test_sizes_and_cli_errors(tmp_path):
    with pytest.raises(S.SyntheticError, match="unknown size key 'cocoa'"):
        S.generate(tmp_path, sizes={"cocoa": 3})
    with pytest.raises(S.SyntheticError, match="size key 'pc459': its images are shared with pc59"):
        S.generate(tmp_path, sizes={"pc459": 3})
    with pytest.raises(S.SyntheticError, match=r"size coco=0: must be a positive integer"):
        S.generate(tmp_path, sizes={"coco": 0})
    r = subprocess.run([sys.executable, "-m", "fisa.data.synthetic", "--root", str(tmp_path), "--size", "coco:3"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--size 'coco:3': expected NAME=N" in r.stderr
    assert not (tmp_path / ".fisa").exists()  # nothing marked done
    args = [f"--size={k}={v}" for k, v in SMALL.items()]
    r = subprocess.run([sys.executable, "-m", "fisa.data.synthetic", "--root", str(tmp_path / "d"), "--seed", "3",
                        *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(build_dataset("coco", "train", tmp_path / "d")) == SMALL["coco_train"]
    assert json.loads(marker_path(tmp_path / "d", "refcoco").read_text())["seed"] == 3


def test_sides_set_the_image_sizes_and_bad_sides_are_refused(tmp_path):
    """presets.<p>.synthetic.sides (the rehearsal preset's paper-like resolutions)."""
    from PIL import Image

    from fisa.data.synthetic import SyntheticError, generate

    sizes = {"coco_train": 1, "coco": 1, "ade150": 1, "ade847": 1, "pc59": 1, "mapillary": 1, "refcoco": 2}
    generate(tmp_path, sizes=sizes, sides=(200, 220))
    images = list(tmp_path.rglob("*.jpg"))
    assert len(images) >= 7
    for path in images:
        assert all(200 <= side <= 220 for side in Image.open(path).size), path
    with pytest.raises(SyntheticError, match=r"sides \[300, 200\]"):
        generate(tmp_path / "bad", sizes=sizes, sides=(300, 200))
