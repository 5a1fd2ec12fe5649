"""Straightforward reference implementations of the metrics, for tests and the benchmark only.

Written from the definitions (panopticapi's `pq_compute`, detectron2's `SemSegEvaluator`,
the referring-segmentation IoU) with plain Python loops and dicts, one image at a time,
so that the fast library-backed code in `fisa.metrics` has something independent to be
compared with. Nothing here is imported by the library.
"""
from __future__ import annotations

import json
import multiprocessing
import os

import numpy as np
from PIL import Image

VOID = 0
OFFSET = 256 * 256 * 256


def _rgb2id(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def _pq_stats_for_images(pairs, gt_dir, pred_dir):
    """Per-category [tp, fp, fn, iou_sum] over a list of (gt_ann, pred_ann) pairs."""
    stats: dict[int, list] = {}

    def stat(cat):
        return stats.setdefault(cat, [0, 0, 0, 0.0])

    for gt_ann, pred_ann in pairs:
        pan_gt = _rgb2id(np.array(Image.open(os.path.join(gt_dir, gt_ann["file_name"])).convert("RGB")))
        pan_pred = _rgb2id(np.array(Image.open(os.path.join(pred_dir, pred_ann["file_name"])).convert("RGB")))
        gt_segs = {s["id"]: s for s in gt_ann["segments_info"]}
        pred_segs = {s["id"]: dict(s) for s in pred_ann["segments_info"]}
        # predicted areas are counted from the PNG (the GT's come from the JSON); as panopticapi
        # does, with np.unique, so the benchmark's reference runs at panopticapi's speed
        ids, counts = np.unique(pan_pred, return_counts=True)
        for seg_id, count in zip(ids.tolist(), counts.tolist()):
            if seg_id != VOID:
                pred_segs[seg_id]["area"] = count  # KeyError: in the PNG, not in the JSON
        # intersections of every (GT id, predicted id) pair
        pairs_ids, counts = np.unique(pan_gt.astype(np.uint64) * OFFSET + pan_pred.astype(np.uint64),
                                      return_counts=True)
        inter = {(int(k) // OFFSET, int(k) % OFFSET): int(n) for k, n in zip(pairs_ids.tolist(), counts.tolist())}
        gt_matched, pred_matched = set(), set()
        for (g, p), n in inter.items():
            if g not in gt_segs or p not in pred_segs:
                continue
            if gt_segs[g]["iscrowd"] == 1:
                continue
            if gt_segs[g]["category_id"] != pred_segs[p]["category_id"]:
                continue
            union = pred_segs[p]["area"] + gt_segs[g]["area"] - n - inter.get((VOID, p), 0)
            iou = n / union
            if iou > 0.5:
                s = stat(gt_segs[g]["category_id"])
                s[0] += 1
                s[3] += iou
                gt_matched.add(g)
                pred_matched.add(p)
        crowd_of_category = {}
        for g, info in gt_segs.items():
            if g in gt_matched:
                continue
            if info["iscrowd"] == 1:
                crowd_of_category[info["category_id"]] = g  # the last crowd segment wins, as in panopticapi
                continue
            stat(info["category_id"])[2] += 1
        for p, info in pred_segs.items():
            if p in pred_matched:
                continue
            ignored = inter.get((VOID, p), 0)
            if info["category_id"] in crowd_of_category:
                ignored += inter.get((crowd_of_category[info["category_id"]], p), 0)
            if ignored / info["area"] > 0.5:
                continue
            stat(info["category_id"])[1] += 1
    return stats


def pq_compute_reference(gt_json, gt_dir, pred_json, pred_dir, processes: int = 1) -> dict:
    """PQ as panopticapi defines it; `processes` > 1 splits the images in chunks, as panopticapi does."""
    with open(gt_json) as f:
        gt = json.load(f)
    with open(pred_json) as f:
        pred = json.load(f)
    categories = {c["id"]: c for c in gt["categories"]}
    pred_by_image = {a["image_id"]: a for a in pred["annotations"]}
    pairs = [(a, pred_by_image[a["image_id"]]) for a in gt["annotations"]]
    if processes > 1:
        chunks = [pairs[i::processes] for i in range(processes)]
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            parts = pool.starmap(_pq_stats_for_images, [(c, gt_dir, pred_dir) for c in chunks])
    else:
        parts = [_pq_stats_for_images(pairs, gt_dir, pred_dir)]
    stats: dict[int, list] = {}
    for part in parts:
        for cat, s in part.items():
            total = stats.setdefault(cat, [0, 0, 0, 0.0])
            for i in range(4):
                total[i] += s[i]
    result = {}
    per_class = {}
    for group, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        pq = sq = rq = 0.0
        n = 0
        for cat, info in categories.items():
            if isthing is not None and (info["isthing"] == 1) != isthing:
                continue
            tp, fp, fn, iou = stats.get(cat, [0, 0, 0, 0.0])
            if tp + fp + fn == 0:
                per_class[cat] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            c = {"pq": iou / (tp + 0.5 * fp + 0.5 * fn), "sq": iou / tp if tp else 0.0,
                 "rq": tp / (tp + 0.5 * fp + 0.5 * fn)}
            per_class[cat] = c
            pq, sq, rq = pq + c["pq"], sq + c["sq"], rq + c["rq"]
        result[group] = {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}
    result["per_class"] = per_class
    return result


def _miou_counts(pairs, num_classes: int, ignore_label: int) -> np.ndarray:
    """[4, C+1] int64: per class tp, GT pixels, predicted pixels; [3, 0] correct, [3, 1] valid pixels."""
    counts = np.zeros((4, num_classes + 1), dtype=np.int64)
    for pred, gt in pairs:
        if isinstance(pred, (str, os.PathLike)):
            pred, gt = np.array(Image.open(pred)), np.array(Image.open(gt))
        valid = gt != ignore_label
        for c in range(num_classes):
            g = gt == c
            p = (pred == c) & valid
            counts[0, c] += int(np.sum(g & p))
            counts[1, c] += int(np.sum(g))
            counts[2, c] += int(np.sum(p))
        counts[3, 0] += int(np.sum((pred == gt) & valid))
        counts[3, 1] += int(np.sum(valid))
    return counts


def miou_reference(pairs, num_classes: int, ignore_label: int, processes: int = 1) -> dict:
    """Current detectron2 SemSegEvaluator rule, one class at a time with explicit pixel counts.

    `pairs` = list of (pred, gt) int arrays, or of (pred_path, gt_path) label-map files. A class
    is averaged only if it has GT pixels; pixels whose GT is the ignore label count for nothing;
    a prediction equal to the ignore label counts as a miss (it is no class).
    """
    pairs = list(pairs)
    if processes > 1:
        chunks = [pairs[i::processes] for i in range(processes)]
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            counts = sum(pool.starmap(_miou_counts, [(c, num_classes, ignore_label) for c in chunks]))
    else:
        counts = _miou_counts(pairs, num_classes, ignore_label)
    tp, gt_count, pred_count = (counts[i, :num_classes].tolist() for i in range(3))
    correct, total = int(counts[3, 0]), int(counts[3, 1])
    ious, accs, weights = [], [], []
    per_class = []
    for c in range(num_classes):
        if gt_count[c] == 0:
            per_class.append(None)
            continue
        union = gt_count[c] + pred_count[c] - tp[c]
        iou = tp[c] / union
        per_class.append(100 * iou)
        ious.append(iou)
        accs.append(tp[c] / gt_count[c])
        weights.append(gt_count[c])
    return {
        "mIoU": 100 * sum(ious) / len(ious),
        "fwIoU": 100 * sum(i * w for i, w in zip(ious, weights)) / sum(gt_count),
        "mACC": 100 * sum(accs) / len(accs),
        "pACC": 100 * correct / total,
        "IoU": per_class,
    }


def referring_reference(pairs) -> dict:
    """mIoU, overall IoU and precision@0.5..0.9 (percent) over (pred_mask, gt_mask) boolean pairs."""
    ious = []
    inter_sum = union_sum = 0
    for pred, gt in pairs:
        inter = int(np.sum(pred & gt))
        union = int(np.sum(pred | gt))
        inter_sum += inter
        union_sum += union
        ious.append(inter / union if union else 1.0)  # both empty: the prediction is right
    out = {"mIoU": 100 * sum(ious) / len(ious), "oIoU": 100 * inter_sum / union_sum}
    for t in (0.5, 0.6, 0.7, 0.8, 0.9):
        out[f"P@{t}"] = 100 * sum(1 for i in ious if i >= t) / len(ious)
    return out
