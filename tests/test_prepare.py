"""Real download + prepare of every benchmark from miniature raw files served over HTTP,
checked value by value against expectations computed here pixel by pixel (independently
of fisa.data.prepare), plus check-only, half-prepared and layout-variant cases."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from test_download_helpers import FileServer  # noqa: E402

from fisa.data import download as dl  # noqa: E402
from fisa.data.prepare import PrepareError, prepare_dataset  # noqa: E402
from fisa.utils.markers import marker_path  # noqa: E402
from fisa.data.prepare.__main__ import main as prepare_main  # noqa: E402
from raw_fixtures import (ADE847_TABLE, ADE_MAPPING, COCO_CATEGORIES, declare_miniature_sizes,  # noqa: E402
                                    sources_for, write_raw_sources)

# pycocotools 2.0.x with numpy 2 warns on every RLE decode; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

ALL = ["coco", "ade150", "ade847", "pc59", "pc459", "mapillary", "refcoco", "refcocoplus"]
MANUAL = {"mapillary": "mapillary-vistas-dataset_public_v1.2.zip", "ade847": "ADE20K_2021_17_01.zip"}
CTX59 = [0, 2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105, 113, 115, 144,
         158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308, 324, 326, 347, 349, 354, 355,
         360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458]


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("raw")
    return out, write_raw_sources(out, seed=1)


def _download_all(raw_dir: Path, root: Path, names=ALL) -> None:
    with FileServer(raw_dir) as srv:
        src = sources_for(srv.url)["datasets"]
        for name in names:
            if name in MANUAL:
                (root / "downloads").mkdir(parents=True, exist_ok=True)
                shutil.copy(raw_dir / MANUAL[name], root / "downloads" / MANUAL[name])
            dl.download_dataset(name, root, src, backoff=0)
    declare_miniature_sizes(root, names)


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    raw_dir, truth = raw
    root = tmp_path_factory.mktemp("root")
    _download_all(raw_dir, root)
    records = {name: prepare_dataset(name, root, workers=1) for name in ALL}
    return root, truth, records


def _read(path):
    with Image.open(path) as im:
        return np.array(im)


def test_every_dataset_is_marked_prepared_with_inputs(prepared):
    root, _, records = prepared
    for name in ALL:
        on_disk = json.loads(marker_path(root, name).read_text())
        assert on_disk["mode"] == "prepared" and on_disk["dataset"] == name
        assert on_disk["inputs"] and all(f.get("sha256") for f in on_disk["inputs"])


def test_coco_panoptic_to_semantic_values(prepared):
    root, truth, _ = prepared
    order = sorted(c["id"] for c in COCO_CATEGORIES)
    for split in ("val2017", "train2017"):
        for name, t in truth["coco"][split].items():
            out = _read(root / f"coco/panoptic_semseg_{split}/{name}.png")
            cat_of = {s["id"]: s["category_id"] for s in t["segments"]}
            expected = np.full(t["ids"].shape, 255, np.uint8)
            for (y, x), sid in np.ndenumerate(t["ids"]):
                if int(sid) in cat_of:
                    expected[y, x] = order.index(cat_of[int(sid)])
            assert out.dtype == np.uint8
            np.testing.assert_array_equal(out, expected)
            assert (expected == 0).any() or (expected == 1).any()  # crowd segments (car, id 3) painted too


def test_ade150_semantic_values(prepared):
    root, truth, _ = prepared
    for stem, t in truth["ade150"].items():
        if "_val_" not in stem:
            assert not (root / f"ADEChallengeData2016/annotations_detectron2/training/{stem}.png").exists()
            continue
        out = _read(root / f"ADEChallengeData2016/annotations_detectron2/validation/{stem}.png")
        expected = np.where(t["sem"] == 0, 255, t["sem"].astype(int) - 1)
        np.testing.assert_array_equal(out, expected)


def test_ade150_panoptic_values(prepared):
    root, truth, records = prepared
    # the miniature mapping has 3 thing classes, the registry (real ADE-150) 100: flagged in the marker
    assert records["ade150"]["summary"]["things_match_registry"] is False
    base = root / "ADEChallengeData2016"
    pan = json.loads((base / "ade20k_panoptic_val.json").read_text())
    things = {b - 1 for _, b, _ in ADE_MAPPING}
    assert {c["id"] for c in pan["categories"] if c["isthing"]} == things
    assert len(pan["categories"]) == 150 and pan["categories"][0]["name"] == "class1"
    ins_to_sem = {a - 1: b - 1 for a, b, _ in ADE_MAPPING}
    by_image = {a["image_id"]: a for a in pan["annotations"]}
    assert [im["id"] for im in pan["images"]] == ["ADE_val_00000001", "ADE_val_00000002"]
    for stem, t in truth["ade150"].items():
        if "_val_" not in stem:
            continue
        ann = by_image[stem]
        rgb = _read(base / "ade20k_panoptic_val" / ann["file_name"]).astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        segs = {s["id"]: s for s in ann["segments_info"]}
        sem, ins = t["sem"].astype(int), t["ins"].astype(int)
        expected_area = {}
        for (y, x), v in np.ndenumerate(sem):
            if ins[y, x, 1] > 0:
                cat = ins_to_sem[ins[y, x, 0] - 1]
            elif v > 0 and v - 1 not in things:
                cat = v - 1
            else:
                assert ids[y, x] == 0, (stem, y, x)  # VOID: unlabelled, or a thing class without an instance
                continue
            assert segs[int(ids[y, x])]["category_id"] == cat, (stem, y, x)
        # JSON areas: stuff measured before things are pasted (as the reference), things on their mask
        for v in np.unique(sem):
            if v > 0 and v - 1 not in things:
                expected_area[("stuff", v - 1)] = int((sem == v).sum())
        for k in np.unique(ins[..., 1]):
            if k > 0:
                expected_area[("thing", int(k))] = int((ins[..., 1] == k).sum())
        got = {}
        for s in ann["segments_info"]:
            key = ("thing", s["id"] % 1000) if s["category_id"] in things else ("stuff", s["category_id"])
            got[key] = s["area"]
            assert s["iscrowd"] == 0
            mask = ids == s["id"]
            if key[0] == "thing":
                ys, xs = np.nonzero(mask)
                assert s["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert got == expected_area
        assert len(segs) == len(ann["segments_info"])  # segment ids unique


def test_ade847_values_and_resize(prepared):
    root, truth, _ = prepared
    base = root / "ADE20K_2021_17_01"
    table = {r["id"]: r["trainId"] for r in ADE847_TABLE}
    assert sorted(p.name for p in (base / "annotations_detectron2/validation").iterdir()) == [
        "ADE_val_00000001.tif", "ADE_val_00000002.tif"]
    assert not (base / "images_detectron2/training").exists()
    for fname, classes in truth["ade847"].items():
        if "_val_" not in fname:
            continue
        out = _read(base / f"annotations_detectron2/validation/{fname[:-4]}.tif")
        assert out.dtype == np.uint16
        h, w = classes.shape
        if min(h, w) > 512:  # OpenCV nearest: src = floor(dst * src_size / dst_size)
            nh, nw = (512, round(w / h * 512)) if w >= h else (round(h / w * 512), 512)
            assert out.shape == (nh, nw)
            with Image.open(base / f"images_detectron2/validation/{fname}") as im:
                assert im.size == (nw, nh)
            for y in range(0, nh, 37):
                for x in range(0, nw, 29):
                    sy, sx = min(int(y * (1 / (nh / h))), h - 1), min(int(x * (1 / (nw / w))), w - 1)
                    assert out[y, x] == table.get(int(classes[sy, sx]), 65535), (y, x)
        else:
            expected = np.vectorize(lambda c: table.get(int(c), 65535))(classes)
            np.testing.assert_array_equal(out, expected)


def test_pascal_context_59_and_459_values(prepared):
    root, truth, _ = prepared
    d = root / "pascal_ctx_d2"
    for stem, t in truth["pascal_context"].items():
        if t["phase"] != "val":
            assert not (d / f"images/validation/{stem}.jpg").exists()
            continue
        assert (d / f"images/validation/{stem}.jpg").read_bytes() == (
            root / f"VOCdevkit/VOC2010/JPEGImages/{stem}.jpg").read_bytes()
        painted = np.zeros(t["label459"].shape, int)
        for cat, m in t["masks"]:
            painted[m] = cat
        expected59 = np.vectorize(lambda c: 255 if c == 0 else CTX59.index(c) - 1)(painted)
        np.testing.assert_array_equal(_read(d / f"annotations_ctx59/validation/{stem}.png"), expected59)
        out459 = _read(d / f"annotations_ctx459/validation/{stem}.tif")
        assert out459.dtype == np.uint16
        np.testing.assert_array_equal(out459, np.where(t["label459"] == 0, 65535, t["label459"].astype(int) - 1))


def test_refcoco_and_mapillary_are_validated(prepared):
    root, _, records = prepared
    assert records["refcoco"]["summary"]["refs"] == {"train": 2, "val": 2, "testA": 2, "testB": 2}
    assert records["refcocoplus"]["summary"]["checked_refs"] == 2
    assert records["mapillary"]["summary"]["validation"] == {"images": 2, "panoptic_categories": 65, "things": 5}


def test_prepare_is_idempotent(prepared):
    root, _, _ = prepared
    before = (root / "ADEChallengeData2016/ade20k_panoptic_val.json").read_text()
    prepare_dataset("ade150", root, workers=1)
    assert (root / "ADEChallengeData2016/ade20k_panoptic_val.json").read_text() == before


def _copy_tree(src: Path, dst: Path, *parts: str) -> None:
    for p in parts:
        (dst / p).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (src / p).is_dir() else shutil.copy)(src / p, dst / p)


def test_check_only_accepts_an_fcclip_tree_and_rejects_an_incomplete_one(prepared, tmp_path, capsys):
    declare_miniature_sizes(tmp_path)
    root, _, _ = prepared
    _copy_tree(root, tmp_path, "pascal_ctx_d2")  # as FC-CLIP's scripts leave it: no markers, no downloads
    assert prepare_main(["--dataset", "pc459", "--root", str(tmp_path), "--check-only"]) == 0
    rec = json.loads(marker_path(tmp_path, "pc459").read_text())
    assert rec["mode"] == "check-only" and rec["summary"] == {"validation": {"images": 2}}

    (tmp_path / "pascal_ctx_d2/annotations_ctx59/validation/2010_001234.png").unlink()
    assert prepare_main(["--dataset", "pc59", "--root", str(tmp_path), "--check-only"]) == 1
    err = capsys.readouterr().err
    assert "images without label e.g. ['2010_001234']" in err and "Run without --check-only" in err
    assert not marker_path(tmp_path, "pc59").exists()


def test_ade847_release_under_ade_folder_is_accepted(prepared, tmp_path):
    declare_miniature_sizes(tmp_path)
    root, _, _ = prepared
    _copy_tree(root, tmp_path, "downloads/prepare_ade20k_full_sem_seg.py")
    (tmp_path / "ade").mkdir()
    _copy_tree(root, tmp_path / "ade", "ADE20K_2021_17_01/index_ade20k.pkl", "ADE20K_2021_17_01/images")
    rec = prepare_dataset("ade847", tmp_path, workers=1)
    assert rec["summary"]["release_dir"] == "ade/ADE20K_2021_17_01"
    assert (tmp_path / "ade/ADE20K_2021_17_01/annotations_detectron2/validation/ADE_val_00000001.tif").exists()


def test_half_prepared_dataset_is_never_marked_done(prepared, tmp_path):
    root, _, _ = prepared
    _copy_tree(root, tmp_path, "downloads/ade20k_instance_catid_mapping.txt", "ADEChallengeData2016/images",
               "ADEChallengeData2016/annotations", "ADEChallengeData2016/annotations_instance",
               "ADEChallengeData2016/objectInfo150.txt")
    (tmp_path / "ADEChallengeData2016/annotations_instance/validation/ADE_val_00000002.png").unlink()
    marker_path(tmp_path, "ade150").parent.mkdir(parents=True, exist_ok=True)
    marker_path(tmp_path, "ade150").write_text("{}")  # stale marker of an earlier run
    with pytest.raises(PrepareError, match=r"missing ADE-150 instance annotation: .*ADE_val_00000002\.png"):
        prepare_dataset("ade150", tmp_path, workers=1)
    assert not marker_path(tmp_path, "ade150").exists()
    assert not (tmp_path / "ADEChallengeData2016/ade20k_panoptic_val.json").exists()


def test_bad_raw_values_are_reported_with_the_file(prepared, tmp_path):
    root, _, _ = prepared
    _copy_tree(root, tmp_path, "VOCdevkit/VOC2010/JPEGImages", "VOCdevkit/VOC2010/trainval_merged.json")
    js = json.loads((tmp_path / "VOCdevkit/VOC2010/trainval_merged.json").read_text())
    js["annos_segmentation"][-1]["category_id"] = 1  # not one of the 59 context classes
    (tmp_path / "VOCdevkit/VOC2010/trainval_merged.json").write_text(json.dumps(js))
    with pytest.raises(PrepareError, match=r"2010_001234\.jpg: category ids \[1\] are not among the 59"):
        prepare_dataset("pc59", tmp_path, workers=1)
    assert not marker_path(tmp_path, "pc59").exists()


def test_mapillary_v20_archive_layout_is_adopted(prepared, tmp_path):
    declare_miniature_sizes(tmp_path)
    root, _, _ = prepared
    src = root / "mapillary_vistas/validation"
    dst = tmp_path / "mapillary_vistas/validation"
    shutil.copytree(src / "images", dst / "images")
    for name in ("labels", "panoptic", "instances"):
        shutil.copytree(src / name, dst / "v1.2" / name)
    rec = prepare_dataset("mapillary", tmp_path, workers=1)
    assert rec["summary"]["validation"]["images"] == 2
    assert (dst / "panoptic/panoptic_2018.json").exists()


def test_refcoco_without_train2014_images_fails_clearly(prepared, tmp_path):
    root, _, _ = prepared
    _copy_tree(root, tmp_path, "refcoco/refcoco")
    (tmp_path / "coco/train2014").mkdir(parents=True)
    with pytest.raises(PrepareError, match=r"2 COCO train2014 images used by refcoco are missing"):
        prepare_dataset("refcoco", tmp_path)
    assert not marker_path(tmp_path, "refcoco").exists()


def test_mapillary_archive_with_a_top_folder_is_hoisted(prepared, tmp_path):
    declare_miniature_sizes(tmp_path)
    root, _, _ = prepared
    shutil.copytree(root / "mapillary_vistas/validation", tmp_path / "mapillary_vistas/vistas_v1.2/validation")
    rec = prepare_dataset("mapillary", tmp_path, workers=1)
    assert rec["summary"]["validation"]["images"] == 2
    assert (tmp_path / "mapillary_vistas/validation/labels").is_dir()


def test_prepared_tree_matches_the_registry_layout(prepared):
    root, _, records = prepared
    # Every path fisa.data.registry (what the loaders read) names for the eval split exists.
    checks = {name: rec["registry_layout"] for name, rec in records.items()}
    assert checks == {name: "passed" for name in ALL}


def test_registry_layout_gap_blocks_the_marker(prepared, tmp_path):
    root, _, _ = prepared
    _copy_tree(root, tmp_path, "pascal_ctx_d2/images", "pascal_ctx_d2/annotations_ctx459")
    from fisa.data.prepare import check_registry_layout

    assert check_registry_layout("pc459", tmp_path) == "passed"
    shutil.rmtree(tmp_path / "pascal_ctx_d2/annotations_ctx459")
    with pytest.raises(PrepareError, match=r"pc459: .*missing: sem_seg_dir .*annotations_ctx459/validation"):
        check_registry_layout("pc459", tmp_path)


def test_ade150_panoptic_pngs_of_another_tool_are_rewritten_with_the_json(prepared, tmp_path):
    declare_miniature_sizes(tmp_path)
    root, _, _ = prepared
    base = "ADEChallengeData2016"
    _copy_tree(root, tmp_path, "downloads/ade20k_instance_catid_mapping.txt", f"{base}/images", f"{base}/annotations",
               f"{base}/annotations_instance", f"{base}/ade20k_panoptic_val")
    png = tmp_path / base / "ade20k_panoptic_val/ADE_val_00000001.png"
    rgb = _read(png)
    Image.fromarray((rgb + 1).astype(np.uint8)).save(png)  # other segment ids, as FC-CLIP's random ones
    prepare_dataset("ade150", tmp_path, workers=1)
    ann = json.loads((tmp_path / base / "ade20k_panoptic_val.json").read_text())["annotations"][0]
    rgb = _read(png).astype(np.int64)
    ids = set(np.unique(rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]).tolist()) - {0}
    assert ids and ids <= {s["id"] for s in ann["segments_info"]}  # the PNG agrees with the JSON again


def test_ade150_thing_check_against_registry():
    from fisa.data.prepare.ade150 import things_match_registry
    from fisa.data.registry import get_meta

    things = {i for i, t in enumerate(get_meta("ade150").thing) if t}
    assert things_match_registry(things) is True
    assert things_match_registry(things - {min(things)}) is False


def test_synthetic_stand_ins_pass_the_same_validation(tmp_path):
    # The small preset's data (fisa.data.synthetic) must be in the very formats real prepare
    # produces: the check-only validators accept every stand-in as a prepared dataset.
    from fisa.data.synthetic import DEFAULT_SIZES, generate

    generate(tmp_path, 0, {k: 2 for k in DEFAULT_SIZES})
    for name in ALL:
        rec = prepare_dataset(name, tmp_path, check_only=True)
        assert rec["mode"] == "check-only" and rec["registry_layout"] == "passed", name


def test_prepared_miniatures_load_with_the_harness_loaders(prepared):
    # What real prepare writes is read by fisa.data.datasets exactly as the paper preset will.
    from fisa.data.datasets import build_dataset
    from fisa.data.registry import get_meta

    root, _, _ = prepared
    for name in ALL:
        meta = get_meta(name)
        ds = build_dataset(name, meta.eval_split, root, require_marker=True)
        assert len(ds) == 2, name
        item = ds[0]
        assert item["image"].dtype.is_floating_point is False and item["image"].shape[0] == 3, name
        if "semantic" in meta.tasks:
            assert item["sem_seg"].shape == item["image"].shape[1:], name
        if name == "ade150":  # panoptic targets decoded from our PNG + JSON
            assert item["masks"].shape[0] == len(item["labels"]) > 0


def test_prepare_completes_a_tree_prepared_elsewhere_without_raw_inputs(prepared, tmp_path):
    declare_miniature_sizes(tmp_path)
    # An FC-CLIP user's tree: prepared outputs, no raw annotations, no mapping/class tables.
    root, _, _ = prepared
    base = "ADEChallengeData2016"
    _copy_tree(root, tmp_path, f"{base}/images", f"{base}/annotations_detectron2", f"{base}/ade20k_panoptic_val",
               f"{base}/ade20k_panoptic_val.json", "ADE20K_2021_17_01/index_ade20k.pkl",
               "ADE20K_2021_17_01/images_detectron2", "ADE20K_2021_17_01/annotations_detectron2")
    before = (tmp_path / base / "ade20k_panoptic_val.json").read_text()
    assert prepare_dataset("ade150", tmp_path, workers=1)["mode"] == "prepared"
    assert (tmp_path / base / "ade20k_panoptic_val.json").read_text() == before
    assert prepare_dataset("ade847", tmp_path, workers=1)["summary"]["validation"] == {"images": 2}
    assert not (tmp_path / "downloads").exists()


def _pq_of_gt_against_itself(root, json_rel, dir_rel):
    from fisa.metrics.panoptic import pq_compute

    return pq_compute(root / json_rel, root / dir_rel, root / json_rel, root / dir_rel)["All"]


def test_prepared_coco_panoptic_gt_evaluates_with_fisa_metrics(prepared):
    root, _, _ = prepared
    res = _pq_of_gt_against_itself(root, "coco/annotations/panoptic_val2017.json", "coco/panoptic_val2017")
    assert res["pq"] == 1.0 and res["n"] == 4  # crowd-only category (car) not counted


def test_prepared_ade150_panoptic_gt_evaluates_with_fisa_metrics(prepared):
    root, _, _ = prepared
    base = "ADEChallengeData2016"
    res = _pq_of_gt_against_itself(root, f"{base}/ade20k_panoptic_val.json", f"{base}/ade20k_panoptic_val")
    assert res["pq"] == 1.0


def test_a_prepared_tree_missing_one_image_fails_naming_the_counts(tmp_path, capsys):
    # The small preset's stand-ins declare their own sizes (fisa.data.synthetic); one image
    # deleted from Pascal-Context val makes the check-only validation fail with both counts.
    from fisa.data.registry import expected_sizes_path
    from fisa.data.synthetic import DEFAULT_SIZES, generate

    generate(tmp_path, 0, {k: 2 for k in DEFAULT_SIZES})
    images = sorted((tmp_path / "pascal_ctx_d2" / "images" / "validation").glob("*.jpg"))
    assert len(images) == 2
    images[0].unlink()
    with pytest.raises(PrepareError, match=r"pc59 val: expected 2 images \(declared by fisa.data.synthetic.*found 1"):
        prepare_dataset("pc59", tmp_path, check_only=True)
    assert not marker_path(tmp_path, "pc59").exists()
    argv = ["--dataset", "pc59", "--root", str(tmp_path), "--check-only"]
    assert prepare_main(argv) == 1
    assert "expected 2 images" in capsys.readouterr().err
    # allowed subsets pass, and the marker says so
    with pytest.raises(PrepareError):  # the validators still see the orphan label
        prepare_dataset("pc59", tmp_path, check_only=True, allow_subset=True)
    next((tmp_path / "pascal_ctx_d2" / "annotations_ctx59" / "validation").glob(images[0].stem + ".*")).unlink()
    rec = prepare_dataset("pc59", tmp_path, check_only=True, allow_subset=True)
    assert rec["subset"] is True and rec["allow_subset"] is True
    assert [(s["split"], s["expected"], s["found"], s["subset"]) for s in rec["split_sizes"]] == [("val", 2, 1, True)]
    # without the stand-in's declaration the official size applies (PASCAL-Context val: 5,105)
    expected_sizes_path(tmp_path, "pc59").unlink()
    with pytest.raises(PrepareError, match=r"pc59 val: expected 5105 images \(official size.*found 1"):
        prepare_dataset("pc59", tmp_path, check_only=True)


def test_referring_split_sizes_count_refs(tmp_path):
    import pickle

    from fisa.data.synthetic import DEFAULT_SIZES, generate

    counts = generate(tmp_path, 0, {k: 2 for k in DEFAULT_SIZES})
    n_val = counts["refcoco"]["val"]
    rec = prepare_dataset("refcoco", tmp_path, check_only=True)
    assert [(s["split"], s["unit"], s["expected"], s["found"]) for s in rec["split_sizes"]] == [
        ("val", "refs", n_val, n_val)]
    path = tmp_path / "refcoco" / "refcoco" / "refs(unc).p"
    refs = pickle.loads(path.read_bytes())
    drop = next(i for i, r in enumerate(refs) if r["split"] == "val")
    path.write_bytes(pickle.dumps(refs[:drop] + refs[drop + 1:], protocol=2))
    with pytest.raises(PrepareError, match=rf"refcoco val: expected {n_val} refs .*found {n_val - 1}"):
        prepare_dataset("refcoco", tmp_path, check_only=True)
