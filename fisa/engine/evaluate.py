"""`python -m fisa.engine.evaluate`: one model on one dataset -> predictions + one metrics JSON.

    python -m fisa.engine.evaluate --run-config results/small/configs/runs/fisa/seed0.yaml \
        --dataset ade150 --output results/small/eval/fisa/seed0/ade150.json

The run config is the only config read; the trained model is its `checkpoints.run_dir`'s.

Predictions go beside the JSON, in `<output without .json>/`:
`semantic/<file stem>.png` (contiguous class ids; 16-bit when there are > 255 classes,
the ignore value never appears) and `panoptic/<file stem>.png` + `panoptic.json`
(panopticapi format: RGB-encoded segment ids, the dataset's own category ids). Then the
metrics (`fisa.metrics`), per class included, and the JSON
`{experiment, dataset, preset, seed, metrics, per_class, provenance}` (percent), atomically.

Oracle variants (Fig. 2a: `proposals: oracle` or `classes: oracle` in the variant table) get
the ground truth passed to the model; referring datasets (Tab. 3f) use the zero-shot protocol
of `inference.referring_masks`, scored as LAVT / Mask Grounding do (`oIoU` overall IoU and
`mIoU` on 480x480 masks, `fisa.metrics.referring`). Every record says whether it covers a
subset of the split (`subset`, `dataset_size`), the checksum of the split's annotations
(`provenance.dataset_checksum`, `fisa.engine.provenance.dataset_checksum`) and the precision it
ran in (`eval.precision`: fp32 | tf32 | bf16 autocast, fisa.engine.precision; a device that cannot
run it fails). Deterministic given
the checkpoint (no randomness at inference; `torch.use_deterministic_algorithms` on).
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fisa.config import config_hash, load_run_config
from fisa.engine import provenance
from fisa.engine.cli import add_run_config_arg, run_main, setup_logging
from fisa.engine.inference import predict, referring_masks, run_model
from fisa.engine.precision import precision_context
from fisa.engine.run_model import load_run_model, pick_device
from fisa.utils.io import atomic_path, atomic_write_json, sha256_of

log = logging.getLogger("fisa.evaluate")


def prediction_dir(output: str | Path) -> Path:
    """Where predictions of an evaluation JSON go: the JSON's path without `.json`."""
    output = Path(output)
    return output.with_suffix("") if output.suffix == ".json" else output.parent / (output.name + "_predictions")


def write_semantic_png(path: Path, labels: np.ndarray, num_classes: int) -> None:
    """Contiguous class ids as an 8-bit PNG, or 16-bit when there are more than 255 classes."""
    dtype = np.uint16 if num_classes > 255 else np.uint8
    with atomic_path(path) as tmp:
        Image.fromarray(labels.astype(dtype)).save(tmp, format="PNG")


def _file_stem(item: dict) -> str:
    return Path(str(item.get("file_name", item.get("image_id")))).stem


def _category_ids(meta, gt_json: dict | None) -> list[int]:
    """Dataset category id of each contiguous class index."""
    ids = getattr(meta, "category_ids", None)
    if ids:
        return list(ids)
    if gt_json is not None:
        cats = sorted(gt_json["categories"], key=lambda c: c["id"])
        if len(cats) == len(meta.classes):
            return [c["id"] for c in cats]
        raise ValueError(f"{meta.name}: panoptic categories ({len(cats)}) do not match the registry's "
                         f"{len(meta.classes)} classes")
    return list(range(len(meta.classes)))


def evaluate(resolved: dict, dataset_name: str, run_dir: str | Path | None, output: str | Path,
             device: torch.device | None = None) -> dict:
    """Evaluate the run of `resolved` on `dataset_name`; writes predictions and `output`; returns the record."""
    from fisa.data.datasets import build_dataset
    from fisa.data.registry import check_split_size, get_meta, panoptic_gt
    from fisa.utils.panoptic_ids import id2rgb
    from fisa.models.variants import get_variant
    from fisa.metrics.semantic import MIOU_GT_CLASSES, MIOU_GT_OR_PRED_CLASSES, MIOU_RULES, SemSegEvaluator

    t_start = time.perf_counter()
    device = device or pick_device(resolved)
    torch.use_deterministic_algorithms(True, warn_only=True)
    ev = resolved["eval"]
    # A precision the device cannot run fails here, before any work (never silently fp32).
    autocast = precision_context(ev["precision"], device, "eval.precision")
    meta = get_meta(dataset_name, ev["ade150_synonyms"] if dataset_name == "ade150" else None)
    min_size, max_size = int(ev["min_size"]), int(ev["max_size"])
    model, ckpt = load_run_model(resolved, run_dir, device)
    model.eval()
    dataset = build_dataset(dataset_name, meta.eval_split, resolved["data_root"], require_marker=True)
    # A truncated prepared split is an error naming both counts, unless eval.allow_subset.
    split_size = check_split_size(dataset_name, meta.eval_split, len(dataset), resolved["data_root"],
                                  bool(ev["allow_subset"]))
    n = len(dataset) if not ev["max_images"] else min(len(dataset), int(ev["max_images"]))
    tasks = set(meta.tasks)
    variant = resolved["variant"]
    oracle = get_variant(variant).oracle
    if oracle and not tasks & {"semantic", "panoptic"}:
        raise ValueError(f"{variant} needs a dataset with segment ground truth; {dataset_name} has {sorted(tasks)}")
    out_dir = prediction_dir(output)
    log.info("evaluating %s (seed %d) on %s: %d images, tasks %s, predictions in %s", resolved["experiment"],
             resolved["seed"], dataset_name, n, sorted(tasks), out_dir)

    metrics, per_class, seconds, conventions = {}, {}, [], None
    if "referring" in tasks:
        from fisa.metrics.referring import ReferringEvaluator, protocol_mask

        # LAVT / Mask Grounding: the raw sentences (the loader's `expressions`), the refer
        # toolkit's mask, both masks compared at eval.referring_size (480) squared.
        size = ev["referring_size"]
        evaluator = ReferringEvaluator()
        for i in range(n):
            item = dataset[i]
            t0 = time.perf_counter()
            with autocast:
                masks = referring_masks(model, item["image"], list(item["expressions"]), min_size, max_size).cpu()
            seconds.append(time.perf_counter() - t0)
            gt = item["mask"]
            for e in range(masks.shape[0]):
                g = gt[e] if gt.ndim == 3 else gt
                evaluator.process(protocol_mask(masks[e].numpy(), size), protocol_mask(g.numpy(), size),
                                  name=f"{_file_stem(item)}#{e}")
        metrics.update(evaluator.evaluate())
    else:
        classes = meta.classes
        names = [c[0] for c in classes]
        with torch.no_grad(), autocast:
            vocabulary = model.encode_vocabulary(classes)
        sem_eval = SemSegEvaluator(len(classes), meta.ignore_label) if "semantic" in tasks else None
        gt_json_path = gt_dir = None
        gt_json = None
        if "panoptic" in tasks:
            gt_json_path, gt_dir = panoptic_gt(dataset_name, resolved["data_root"])
            gt_json = json.loads(Path(gt_json_path).read_text())
        cat_ids = _category_ids(meta, gt_json)
        pan_annotations, used_images = [], []
        for i in range(n):
            item = dataset[i]
            stem = _file_stem(item)
            targets = None
            if oracle:
                targets = [_gt_segments(item, meta)]
            t0 = time.perf_counter()
            with autocast:
                outputs = run_model(model, item["image"], vocabulary, min_size, max_size, targets=targets)
            pred = predict(outputs, tasks, meta.thing, ev)
            seconds.append(time.perf_counter() - t0)
            if sem_eval is not None:
                labels = pred["semantic"].cpu().numpy()
                sem_eval.process(labels, item["sem_seg"].numpy(), name=stem)
                write_semantic_png(out_dir / "semantic" / f"{stem}.png", labels, len(classes))
            if "panoptic" in tasks:
                seg, segments = pred["panoptic"]
                with atomic_path(out_dir / "panoptic" / f"{stem}.png") as tmp:
                    Image.fromarray(id2rgb(seg.cpu().numpy().astype(np.uint32))).save(tmp, format="PNG")
                pan_annotations.append({
                    "image_id": item["image_id"], "file_name": f"{stem}.png",
                    "segments_info": [{"id": s["id"], "category_id": cat_ids[s["category_id"]],
                                       "isthing": int(s["isthing"]), "score": s["score"]} for s in segments]})
                used_images.append(item["image_id"])
        if sem_eval is not None:
            sem = sem_eval.evaluate()
            for k in ("mIoU", MIOU_GT_CLASSES, MIOU_GT_OR_PRED_CLASSES, "fwIoU", "mACC", "pACC"):
                metrics[k] = float(sem[k])  # both detectron2 mIoU rules, by name; `mIoU` = the paper-era one
            conventions = {"mIoU": MIOU_GT_CLASSES, **MIOU_RULES, "ignore_label": int(meta.ignore_label),
                           "ignore_rule": "ground-truth pixels with the ignore label count neither as ground "
                                          "truth nor as prediction (detectron2)"}
            for name, iou in zip(names, sem["IoU"]):
                per_class.setdefault(name, {})["IoU"] = None if iou is None or np.isnan(iou) else float(iou)
        if "panoptic" in tasks:
            metrics.update(_panoptic_metrics(out_dir, gt_json, gt_json_path, gt_dir, pan_annotations,
                                             used_images, n < len(dataset), cat_ids, names, per_class))

    record = {
        "experiment": resolved["experiment"], "dataset": dataset_name, "preset": resolved["preset"],
        "seed": resolved["seed"], "variant": variant, "metrics": metrics, "per_class": per_class,
        # subset: the split differs from its expected size (eval.allow_subset) or eval.max_images cut it
        "subset": bool(split_size["subset"] or n < len(dataset)),
        "dataset_size": {**split_size, "evaluated": n, "allow_subset": bool(ev["allow_subset"])},
        "provenance": {
            "commit": provenance.git_commit(), "config_hash": config_hash(resolved),
            "code_version": resolved.get("code_version"),  # the commit that resolved the run config
            # the same for every seed of the experiment: what tables pool across seeds
            "config_hash_seedless": config_hash({k: v for k, v in resolved.items() if k != "seed"}),
            "checkpoint": str(ckpt) if ckpt else None, "checkpoint_sha256": sha256_of(ckpt) if ckpt else None,
            # the prepared split's annotations, hashed (provenance.dataset_checksum)
            "dataset_split": meta.eval_split,
            "dataset_checksum": provenance.dataset_checksum(dataset_name, meta.eval_split, resolved["data_root"]),
            "device": provenance.device_name(device), "precision": ev["precision"], "seed": resolved["seed"],
            "images": n,
            "dataset_images": len(dataset), "predictions": str(out_dir),
            "semantic_conventions": conventions,
            "timings": {"total_s": round(time.perf_counter() - t_start, 3),
                        "inference_s": round(sum(seconds), 3),
                        "median_image_s": round(statistics.median(seconds), 4) if seconds else None},
            "versions": provenance.library_versions(), "finished": provenance.now(),
        },
    }
    atomic_write_json(output, record)
    log.info("%s on %s: %s", resolved["experiment"], dataset_name,
             ", ".join(f"{k}={v:.2f}" for k, v in metrics.items() if isinstance(v, (int, float))))
    return record


def _gt_segments(item: dict, meta) -> dict:
    """Ground-truth segments {labels, masks} of an item (panoptic masks, else from sem_seg)."""
    if "masks" in item and "labels" in item:
        keep = ~item["iscrowd"].bool() if "iscrowd" in item else torch.ones(len(item["labels"]), dtype=torch.bool)
        return {"labels": item["labels"][keep], "masks": item["masks"][keep]}
    sem = item["sem_seg"]
    labels = [c for c in torch.unique(sem).tolist() if c != meta.ignore_label]
    return {"labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.stack([sem == c for c in labels]) if labels else torch.zeros(0, *sem.shape, dtype=torch.bool)}


def _panoptic_metrics(out_dir, gt_json, gt_json_path, gt_dir, annotations, used_images, subset, cat_ids,
                      names, per_class) -> dict:
    """Write panoptic.json and run PQ; fills per_class PQ/SQ/RQ; returns PQ, SQ, RQ, PQ_th, PQ_st (percent)."""
    from fisa.metrics.panoptic import pq_compute

    pred_json = out_dir / "panoptic.json"
    atomic_write_json(pred_json, {"annotations": annotations, "categories": gt_json["categories"]})
    if subset:  # eval.max_images: PQ over the evaluated images only
        keep = set(used_images)
        sub = {**gt_json, "annotations": [a for a in gt_json["annotations"] if a["image_id"] in keep],
               "images": [im for im in gt_json.get("images", []) if im["id"] in keep]}
        gt_json_path = out_dir / "gt_subset.json"
        atomic_write_json(gt_json_path, sub)
    res = pq_compute(str(gt_json_path), str(gt_dir), str(pred_json), str(out_dir / "panoptic"))
    out = {}
    for key, group in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
        g = res.get(group, {})
        if key == "":
            out.update(PQ=100 * g["pq"], SQ=100 * g["sq"], RQ=100 * g["rq"])
        elif g.get("n", 1):
            out[f"PQ{key}"] = 100 * g["pq"]
    by_id = dict(zip(cat_ids, names))
    for cid, v in (res.get("per_class") or {}).items():
        name = by_id.get(int(cid))
        if name is not None:
            per_class.setdefault(name, {}).update(PQ=100 * v["pq"], SQ=100 * v["sq"], RQ=100 * v["rq"])
    return out


def main(argv=None) -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_config_arg(ap)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--output", required=True, help="results/<P>/eval/<E>/seed<S>/<D>.json")
    args = ap.parse_args(argv)
    setup_logging()

    def body():
        resolved = load_run_config(args.run_config)
        evaluate(resolved, args.dataset, resolved["checkpoints"]["run_dir"], args.output)

    run_main(body)


if __name__ == "__main__":
    from fisa.utils.errors import run_cli

    run_cli(main)  # one `error: <file>: <what> — <fix>` line for a user-fixable error
