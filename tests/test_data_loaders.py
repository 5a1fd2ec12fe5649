"""Loaders on hand-written prepared trees (independent of the synthetic generator), subsets,
transforms and collate."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from fisa.data.datasets import build_dataset, subset, subset_indices
from fisa.data.registry import DatasetError, get_meta
from fisa.data.transforms import collate, eval_transform, shortest_edge_size, train_transform


def _rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)


def _coco_tree(root):
    """A 4x6 COCO val image: person (cat 1, id 300), a crowd of cat 1 (id 70000), sky (cat 187,
    id 2), void (0)."""
    ids = np.array([[2, 2, 2, 2, 2, 2],
                    [300, 300, 2, 70000, 70000, 0],
                    [300, 300, 2, 70000, 0, 0],
                    [2, 2, 2, 2, 2, 2]])
    (root / "coco/val2017").mkdir(parents=True)
    (root / "coco/panoptic_val2017").mkdir(parents=True)
    (root / "coco/panoptic_semseg_val2017").mkdir(parents=True)
    (root / "coco/annotations").mkdir(parents=True)
    img = np.zeros((4, 6, 3), np.uint8)
    img[..., 0] = np.arange(6)[None] * 40
    Image.fromarray(img).save(root / "coco/val2017/000000000139.png", format="PNG")  # lossless, .jpg name below
    (root / "coco/val2017/000000000139.png").rename(root / "coco/val2017/000000000139.jpg")
    Image.fromarray(_rgb(ids)).save(root / "coco/panoptic_val2017/000000000139.png")
    sem = np.full((4, 6), 255, np.uint8)
    Image.fromarray(sem).save(root / "coco/panoptic_semseg_val2017/000000000139.png")
    gt = {"images": [{"id": 139, "file_name": "000000000139.jpg", "height": 4, "width": 6}],
          "annotations": [{"image_id": 139, "file_name": "000000000139.png", "segments_info": [
              {"id": 300, "category_id": 1, "iscrowd": 0}, {"id": 70000, "category_id": 1, "iscrowd": 1},
              {"id": 2, "category_id": 187, "iscrowd": 0}, {"id": 5, "category_id": 3, "iscrowd": 0}]}],
          "categories": [{"id": 1, "isthing": 1}, {"id": 3, "isthing": 1}, {"id": 187, "isthing": 0}]}
    (root / "coco/annotations/panoptic_val2017.json").write_text(json.dumps(gt))
    return ids, img


def test_panoptic_loader_reads_rgb_ids_json_and_semantic(tmp_path):
    ids, img = _coco_tree(tmp_path)
    ds = build_dataset("coco", "val", tmp_path)
    assert len(ds) == 1
    item = ds[0]
    coco = get_meta("coco")
    assert item["image_id"] == 139 and item["file_name"] == "000000000139.jpg"
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 4, 6)
    assert torch.equal(item["image"].permute(1, 2, 0), torch.from_numpy(img))
    # segment 5 is in the JSON but has no pixels: not an item target
    assert item["labels"].tolist() == [0, 0, coco.category_id_to_index[187]]
    assert item["iscrowd"].tolist() == [False, True, False]
    for k, sid in enumerate([300, 70000, 2]):
        assert torch.equal(item["masks"][k], torch.from_numpy(ids == sid))
    assert item["masks"].dtype == torch.bool
    assert item["sem_seg"].dtype == torch.int64 and (item["sem_seg"] == 255).all()
    # the training split does not load semantic maps unless asked
    assert "sem_seg" not in build_dataset("coco", "val", tmp_path, with_sem_seg=False)[0]


def test_panoptic_loader_errors_name_the_file(tmp_path):
    _coco_tree(tmp_path)
    (tmp_path / "coco/panoptic_val2017/000000000139.png").unlink()
    with pytest.raises(DatasetError, match=r"missing panoptic PNG: .*panoptic_val2017/000000000139.png "
                                           r"\(create it with python -m fisa.data.prepare --dataset coco"):
        build_dataset("coco", "val", tmp_path)[0]
    with pytest.raises(DatasetError, match=r"coco: missing panoptic JSON: .*annotations/panoptic_train2017.json"):
        build_dataset("coco", "train", tmp_path)
    gt = json.loads((tmp_path / "coco/annotations/panoptic_val2017.json").read_text())
    gt["categories"].append({"id": 12, "isthing": 1})
    (tmp_path / "coco/annotations/panoptic_val2017.json").write_text(json.dumps(gt))
    with pytest.raises(DatasetError, match=r"categories \[12\] are not in the registry's coco category ids"):
        build_dataset("coco", "val", tmp_path)


def test_semantic_loader_16bit_tiff_keeps_the_ignore_label(tmp_path):
    d = tmp_path / "ADE20K_2021_17_01"
    (d / "images_detectron2/validation").mkdir(parents=True)
    (d / "annotations_detectron2/validation").mkdir(parents=True)
    Image.fromarray(np.full((3, 5, 3), 7, np.uint8)).save(d / "images_detectron2/validation/a.jpg")
    lab = np.array([[0, 846, 65535, 300, 300]] * 3, dtype=np.uint16)
    Image.fromarray(lab).save(d / "annotations_detectron2/validation/a.tif", format="TIFF")
    item = build_dataset("ade847", "val", tmp_path)[0]
    assert item["sem_seg"].tolist() == lab.astype(np.int64).tolist()
    assert item["labels"].tolist() == [0, 300, 846]
    assert torch.equal(item["masks"][1], torch.from_numpy(lab == 300))
    assert item["image_id"] == "a" and not item["iscrowd"].any()


def test_semantic_loader_accepts_the_ade_prefix_layout_and_errors(tmp_path):
    d = tmp_path / "ade/ADE20K_2021_17_01"
    (d / "images_detectron2/validation").mkdir(parents=True)
    (d / "annotations_detectron2/validation").mkdir(parents=True)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(d / "images_detectron2/validation/b.jpg")
    ds = build_dataset("ade847", "val", tmp_path)
    with pytest.raises(DatasetError, match=r"ade847: missing semantic label map: .*ade/ADE20K_2021_17_01/"
                                           r"annotations_detectron2/validation/b.tif"):
        ds[0]
    with pytest.raises(DatasetError, match=r"pc59: missing image folder: .*pascal_ctx_d2/images/validation"):
        build_dataset("pc59", "val", tmp_path)
    with pytest.raises(DatasetError, match=r"pc59 is not prepared under .*\.fisa/pc59\.prepare\.done is missing"):
        build_dataset("pc59", "val", tmp_path, require_marker=True)


def test_mapillary_palette_labels_give_indices(tmp_path):
    d = tmp_path / "mapillary_vistas/validation"
    for sub in ("images", "labels", "panoptic"):
        (d / sub).mkdir(parents=True)
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(d / "images/x.jpg")
    lab = Image.fromarray(np.array([[0, 64, 65], [13, 13, 65]], np.uint8), mode="P")
    lab.putpalette([v for i in range(256) for v in (i, 255 - i, 7)])
    lab.save(d / "labels/x.png")
    Image.fromarray(_rgb(np.array([[1001, 1002, 0], [1003, 1003, 0]]))).save(d / "panoptic/x.png")
    (d / "panoptic/panoptic_2018.json").write_text(json.dumps({
        "images": [{"id": "x", "file_name": "x.jpg", "height": 2, "width": 3}],
        "annotations": [{"image_id": "x", "file_name": "x.png", "segments_info": [
            {"id": 1001, "category_id": 1, "iscrowd": 0}, {"id": 1002, "category_id": 65, "iscrowd": 0},
            {"id": 1003, "category_id": 14, "iscrowd": 0}]}],
        "categories": [{"id": i} for i in range(1, 66)]}))
    item = build_dataset("mapillary", "val", tmp_path)[0]
    assert item["sem_seg"].tolist() == [[0, 64, 65], [13, 13, 65]]
    assert item["labels"].tolist() == [0, 64, 13] and item["image_id"] == "x"


def test_referring_loader_decodes_polygons_and_groups_sentences(tmp_path):
    (tmp_path / "coco/train2014").mkdir(parents=True)
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "coco/train2014/COCO_train2014_000000000009.jpg")
    folder = tmp_path / "refcoco/refcoco+"
    folder.mkdir(parents=True)
    inst = {"images": [{"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "height": 10, "width": 12}],
            "annotations": [{"id": 77, "image_id": 9, "category_id": 1,
                             "segmentation": [[2, 1, 6, 1, 6, 5, 2, 5]]}]}
    (folder / "instances.json").write_text(json.dumps(inst))
    refs = [{"ref_id": 3, "ann_id": 77, "image_id": 9, "split": "val",
             "sentences": [{"sent_id": 10, "sent": "left man", "raw": "Left man"},
                           {"sent_id": 11, "sent": "man in red", "raw": "man in red!"}]},
            {"ref_id": 4, "ann_id": 77, "image_id": 9, "split": "testA",
             "sentences": [{"sent_id": 12, "sent": "x", "raw": "x"}]}]
    (folder / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    ds = build_dataset("refcocoplus", "val", tmp_path)
    assert len(ds) == 1
    item = ds[0]
    assert item["expressions"] == ["Left man", "man in red!"] and item["sentence_ids"] == [10, 11]  # raw text
    assert item["ref_id"] == 3 and item["ann_id"] == 77 and item["mask"].dtype == torch.bool
    # the polygon x 2..6, y 1..5 covers the pixels whose centres lie inside it: columns 2-5, rows 1-4
    expect = np.zeros((10, 12), bool)
    expect[1:5, 2:6] = True
    assert torch.equal(item["mask"], torch.from_numpy(expect))
    with pytest.raises(DatasetError, match=r"refs\(unc\).p: no refs in split 'testB'"):
        build_dataset("refcocoplus", "testB", tmp_path)


def test_referring_target_is_the_refer_toolkit_mask_of_overlapping_polygons(tmp_path):
    # refer's getMask sums the polygon layers; LAVT keeps sum == 1, so the overlap of two
    # polygons of one object is background (for two polygons: their XOR), not their union.
    from pycocotools import mask as mask_utils

    (tmp_path / "coco/train2014").mkdir(parents=True)
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "coco/train2014/COCO_train2014_000000000009.jpg")
    folder = tmp_path / "refcoco/refcoco"
    folder.mkdir(parents=True)
    polys = [[2, 1, 6, 1, 6, 5, 2, 5], [4, 3, 9, 3, 9, 8, 4, 8]]
    inst = {"images": [{"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "height": 10, "width": 12}],
            "annotations": [{"id": 77, "image_id": 9, "category_id": 1, "segmentation": polys}]}
    (folder / "instances.json").write_text(json.dumps(inst))
    refs = [{"ref_id": 3, "ann_id": 77, "image_id": 9, "split": "val",
             "sentences": [{"sent_id": 10, "sent": "man", "raw": "Man."}]}]
    (folder / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    a, b = (mask_utils.decode(mask_utils.frPyObjects([p], 10, 12))[:, :, 0].astype(bool) for p in polys)
    assert (a & b).any()
    mask = build_dataset("refcoco", "val", tmp_path)[0]["mask"]
    assert torch.equal(mask, torch.from_numpy(a ^ b))
    refs[0]["sentences"][0].pop("raw")
    (folder / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    with pytest.raises(DatasetError, match="ref 3 sentence 0 has no 'raw' text"):
        build_dataset("refcoco", "val", tmp_path)[0]


def test_subset_is_deterministic_nested_and_never_empty():
    a = subset_indices(1000, 0.1, seed=3)
    assert a == subset_indices(1000, 0.1, seed=3) and len(a) == 100 and a == sorted(set(a))
    assert a != subset_indices(1000, 0.1, seed=4)
    assert set(subset_indices(1000, 0.01, seed=3)) <= set(a)  # smaller fractions are subsets
    assert len(subset_indices(5, 0.001, seed=0)) == 1
    ds = list(range(20))
    assert subset(ds, 1.0, 0) is ds and len(subset(ds, 0.25, 0)) == 5
    with pytest.raises(ValueError, match="data fraction must be in"):
        subset_indices(10, 0.0, 0)


def _item(h=40, w=60):
    """Image whose red channel marks mask 0 (a block) and green marks class 2 in sem_seg."""
    m0 = torch.zeros(h, w, dtype=torch.bool)
    m0[5:25, 10:35] = True
    sem = torch.ones(h, w, dtype=torch.int64)
    sem[m0] = 2
    img = torch.zeros(3, h, w, dtype=torch.uint8)
    img[0][m0] = 250
    img[2] = 100
    return {"image": img, "masks": torch.stack([m0, ~m0]), "labels": torch.tensor([2, 1]),
            "iscrowd": torch.tensor([False, True]), "sem_seg": sem, "image_id": 1, "file_name": "f.jpg"}


def test_large_scale_jitter_keeps_image_masks_and_sem_seg_aligned():
    t = train_transform(32, (0.5, 1.5))
    for seed in range(12):
        torch.manual_seed(seed)
        out = t(_item())
        img, sem = out["image"], out["sem_seg"]
        assert img.shape == (3, 32, 32) and sem.shape == (32, 32) and out["masks"].shape[1:] == (32, 32)
        pad = img[2] == 128  # blue is 100 inside the image, 128 in the padding
        assert torch.equal(pad, sem == 255)  # padding: image 128, sem_seg ignore
        assert not out["masks"][:, pad].any()  # masks are empty in the padding
        # away from the block's edge (where bilinear blends), red pixels are exactly class 2
        clear = ~pad & ((img[0] > 200) | (img[0] < 50))
        agree = ((img[0] > 200) == (sem == 2))[clear].float().mean()
        assert agree == 1 and clear.sum() > 0.5 * (~pad).sum(), (seed, agree)
        ys, xs = torch.nonzero(sem == 2, as_tuple=True)
        ry, rx = torch.nonzero((img[0] > 125) & ~pad, as_tuple=True)
        if len(ys) > 20:  # same block: centroids within a pixel
            assert abs(ys.float().mean() - ry.float().mean()) < 1 and abs(xs.float().mean() - rx.float().mean()) < 1
        if len(out["labels"]) == 2:
            assert torch.equal(out["masks"][0], sem == 2)
        assert len(out["labels"]) == len(out["masks"]) == len(out["iscrowd"])
        assert out["image_id"] == 1


def test_large_scale_jitter_scale_flip_and_dropped_masks():
    torch.manual_seed(0)
    out = train_transform(20, (1.0, 1.0))(_item(40, 60))  # fits the 20x20 box: 13x20 (40*1/3, 60*1/3)
    assert (out["image"][2] == 128).sum() == 20 * 7
    flips = set()
    for seed in range(20):
        torch.manual_seed(seed)
        it = _item(16, 16)
        it["image"][0] = 0
        it["image"][0, :, :8] = 200  # left half marked
        o = train_transform(16, (1.0, 1.0))(it)
        flips.add(bool(o["image"][0, 8, 2] > 100))
    assert flips == {True, False}
    # a crop that misses mask 0 drops it together with its label and crowd flag
    it = _item(200, 200)
    it["masks"][0] = False
    it["masks"][0, 0:2, 0:2] = True
    kept = []
    for seed in range(10):
        torch.manual_seed(seed)
        o = train_transform(32, (2.0, 2.0))(dict(it))
        kept.append(len(o["labels"]))
        assert o["masks"].flatten(1).any(1).all()
    assert min(kept) == 1


def test_eval_transform_is_detectron2_resize_shortest_edge():
    assert shortest_edge_size(480, 640, 800, 1333) == (800, 1067)
    assert shortest_edge_size(100, 1000, 800, 1333) == (133, 1333)
    assert shortest_edge_size(64, 64, 64, 96) == (64, 64)
    out = eval_transform(80, 100)(_item(40, 60))
    assert out["image"].shape == (3, 67, 100) and out["sem_seg"].shape == (67, 100)
    assert set(out["sem_seg"].unique().tolist()) == {1, 2} and out["masks"].shape == (2, 67, 100)
    with pytest.raises(ValueError, match="min_size <= max_size"):
        eval_transform(100, 50)


def test_collate_pads_and_drops_crowd_targets():
    a, b = _item(10, 12), _item(14, 8)
    batch = collate([a, b])
    assert batch["images"].shape == (2, 3, 14, 12) and batch["images"].dtype == torch.float32
    assert batch["image_sizes"] == [(10, 12), (14, 8)]
    assert batch["images"][0, :, 10:].abs().sum() == 0 and batch["images"][1, :, :, 8:].abs().sum() == 0
    assert [t["labels"].tolist() for t in batch["targets"]] == [[2], [2]]  # crowd segment dropped
    assert batch["targets"][0]["masks"].shape == (1, 14, 12)
    assert torch.equal(batch["targets"][0]["masks"][0, :10, :12], a["masks"][0])
    assert batch["image_id"] == [1, 1] and len(batch["sem_seg"]) == 2
    with pytest.raises(ValueError, match="empty batch"):
        collate([])


def test_transforms_on_a_referring_item_keep_the_mask_with_the_image():
    img = torch.zeros(3, 30, 50, dtype=torch.uint8)
    mask = torch.zeros(30, 50, dtype=torch.bool)
    mask[10:20, 30:45] = True
    img[1][mask] = 255
    item = {"image": img, "mask": mask, "expressions": ["the green box"], "image_id": 3, "file_name": "x.jpg"}
    for seed in range(5):
        torch.manual_seed(seed)
        out = train_transform(24, (0.8, 1.2))(item)
        clear = (out["image"][1] > 200) | (out["image"][1] < 50)
        assert torch.equal(((out["image"][1] > 200) == out["mask"])[clear], torch.ones(int(clear.sum()), dtype=torch.bool))
        assert out["expressions"] == ["the green box"] and out["mask"].dtype == torch.bool
    out = eval_transform(60, 200)(item)
    assert out["image"].shape == (3, 60, 100) and out["mask"].shape == (60, 100)
    assert int(out["mask"].sum()) == 20 * 30


def test_packed_records_and_datasets_pickle(tmp_path):
    from fisa.data.datasets import _PackedRecords

    recs = _PackedRecords([{"a": 1}, ("x", [2, 3]), None])
    assert len(recs) == 3 and recs[0] == {"a": 1} and recs[1] == ("x", [2, 3]) and recs[2] is None
    assert recs[-1] is None
    with pytest.raises(IndexError):
        recs[3]
    _coco_tree(tmp_path)
    ds = build_dataset("coco", "val", tmp_path)
    ds2 = pickle.loads(pickle.dumps(ds))  # DataLoader workers under spawn pickle the dataset
    a, b = ds[0], ds2[0]
    assert torch.equal(a["masks"], b["masks"]) and a["labels"].tolist() == b["labels"].tolist()
