"""Panoptic quality (PQ, SQ, RQ) exactly as COCO's reference `panopticapi.evaluation.pq_compute`.

The counting runs in `hotcoco` (Rust, parallel over images, measured equal to panopticapi
within 1e-15 and several times faster, see docs/metrics.md). Around it, this module adds what
hotcoco does differently from the reference:

- hotcoco accepts malformed JSON that panopticapi rejects (a GT segment without `iscrowd` or
  `area`, categories without `isthing`, no stuff categories); we validate first, with the
  reference's strictness and messages that name the file, image id and segment id;
- hotcoco reports -1 for a category with tp+fp+fn = 0 where panopticapi reports 0.0 (and
  leaves it out of the mean either way): we report 0.0;
- a group (Things or Stuff) with no evaluable category makes panopticapi divide by zero:
  we report it as null with n = 0 (and raise a clear error when All has none), instead of -1.

The rules themselves (IoU > 0.5 matching, VOID removed from the union, crowd regions ignored,
unmatched predictions ignored when more than half of them lies on VOID or on a crowd region
of their class, GT areas taken from the JSON) are hotcoco's, pinned by tests against an
independent implementation (tests/reference_metrics.py).

CLI::

    python -m fisa.metrics.panoptic --gt-json F --gt-dir D --pred-json F --pred-dir D --output OUT.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from fisa.utils.io import atomic_write_json

GROUPS = ("All", "Things", "Stuff")
log = logging.getLogger(__name__)


class PanopticInputError(ValueError):
    """Malformed panoptic input: the message names the file, image id and segment id."""


def _load_json(path: str | os.PathLike, role: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise PanopticInputError(f"{role} JSON {path} does not exist")
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PanopticInputError(f"{role} JSON {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise PanopticInputError(f"{role} JSON {path} has no 'annotations' list")
    return data


def _check_annotations(data: dict, path: Path, role: str, categories: dict[int, dict]) -> dict[Any, dict]:
    """Check each image's annotation; return them by image id."""
    by_image: dict[Any, dict] = {}
    for k, ann in enumerate(data["annotations"]):
        where = f"{role} JSON {path}, annotations[{k}]"
        for key in ("image_id", "file_name", "segments_info"):
            if key not in ann:
                raise PanopticInputError(f"{where} has no '{key}'")
        image_id = ann["image_id"]
        where = f"{role} JSON {path}, image id {image_id}"
        if image_id in by_image:
            raise PanopticInputError(f"{where} has two annotations")
        by_image[image_id] = ann
        seen = set()
        required = ("id", "category_id", "iscrowd", "area") if role == "ground truth" else ("id", "category_id")
        for seg in ann["segments_info"]:
            for key in required:
                if key not in seg:
                    raise PanopticInputError(f"{where}: segment {seg.get('id', '?')} has no '{key}'")
            if seg["id"] in seen:
                raise PanopticInputError(f"{where}: segment id {seg['id']} appears twice in segments_info")
            seen.add(seg["id"])
            if seg["category_id"] not in categories:
                raise PanopticInputError(
                    f"{where}: segment {seg['id']} has unknown category_id {seg['category_id']} "
                    f"(not in the ground truth's categories)")
            if role == "ground truth" and seg["iscrowd"] not in (0, 1):
                raise PanopticInputError(f"{where}: segment {seg['id']} has iscrowd={seg['iscrowd']!r} (0 or 1)")
    return by_image


def validate_panoptic_inputs(gt: dict, gt_json: Path, gt_dir: Path, pred: dict, pred_json: Path,
                             pred_dir: Path) -> dict[int, dict]:
    """Raise PanopticInputError where panopticapi would fail (or hotcoco would silently differ).

    Returns the GT categories by id. PNG-level errors (segment in the PNG but not the JSON or
    the reverse, unreadable or missing PNG, size mismatch) are detected by hotcoco while it
    reads the PNGs, with messages naming the image id / segment id / file.
    """
    if not isinstance(gt.get("categories"), list) or not gt["categories"]:
        raise PanopticInputError(f"ground truth JSON {gt_json} has no 'categories' list")
    categories: dict[int, dict] = {}
    for cat in gt["categories"]:
        if "id" not in cat or "isthing" not in cat:
            raise PanopticInputError(
                f"ground truth JSON {gt_json}: category {cat.get('id', cat)} needs 'id' and 'isthing' "
                f"(panopticapi splits Things/Stuff by it)")
        if cat["isthing"] not in (0, 1):
            raise PanopticInputError(f"ground truth JSON {gt_json}: category {cat['id']} has isthing={cat['isthing']!r}")
        categories[cat["id"]] = cat
    for flag, group in ((1, "Things"), (0, "Stuff")):
        if not any(c["isthing"] == flag for c in categories.values()):
            raise PanopticInputError(
                f"ground truth JSON {gt_json} has no {group.lower()} categories (isthing={flag}); "
                f"panopticapi's {group} average is undefined")
    for folder, role in ((gt_dir, "ground truth"), (pred_dir, "prediction")):
        if not Path(folder).is_dir():
            raise PanopticInputError(f"folder {folder} with {role} segmentations does not exist")
    gt_by_image = _check_annotations(gt, gt_json, "ground truth", categories)
    pred_by_image = _check_annotations(pred, pred_json, "prediction", categories)
    for image_id in gt_by_image:
        if image_id not in pred_by_image:
            raise PanopticInputError(f"no prediction for the image with id {image_id} in {pred_json}")
    return categories


def _integer_image_ids(gt: dict, pred: dict) -> tuple[dict, dict]:
    """Renumber image ids 0..N-1 when any is not an int (ADE-150's and Mapillary's panoptic JSONs use
    file-name strings, which panopticapi accepts but hotcoco does not); ints are left alone."""
    ids = [a["image_id"] for a in gt["annotations"]] + [a["image_id"] for a in pred["annotations"]]
    ids += [im["id"] for im in gt.get("images", []) if "id" in im]
    if all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        return gt, pred
    index = {image_id: k for k, image_id in enumerate(dict.fromkeys(ids))}

    def renumber(data: dict) -> dict:
        out = dict(data)
        out["annotations"] = [dict(a, image_id=index[a["image_id"]]) for a in data["annotations"]]
        if "images" in data:
            out["images"] = [dict(im, id=index[im["id"]]) if "id" in im else im for im in data["images"]]
        return out

    return renumber(gt), renumber(pred)


def pq_compute(gt_json: str | os.PathLike, gt_dir: str | os.PathLike, pred_json: str | os.PathLike,
               pred_dir: str | os.PathLike) -> dict:
    """PQ/SQ/RQ over All, Things and Stuff, and per class, as panopticapi's `pq_compute` returns them.

    Returns {"All": {"pq", "sq", "rq", "n"}, "Things": {...}, "Stuff": {...},
    "per_class": {category_id (int): {"pq", "sq", "rq"}}} with fractions in [0, 1]; a category
    with no segment on either side gets 0.0 and is left out of the means (as the reference).
    A group none of whose categories occurs gets {"pq": None, "sq": None, "rq": None, "n": 0}
    (panopticapi would divide by zero).
    Predictions for images absent from the GT are ignored. Raises PanopticInputError (a
    ValueError) or FileNotFoundError on bad input.
    """
    from hotcoco.panoptic import PanopticEval

    gt_json, gt_dir, pred_json, pred_dir = map(Path, (gt_json, gt_dir, pred_json, pred_dir))
    gt = _load_json(gt_json, "ground truth")
    pred = _load_json(pred_json, "prediction")
    categories = validate_panoptic_inputs(gt, gt_json, gt_dir, pred, pred_json, pred_dir)
    gt, pred = _integer_image_ids(gt, pred)
    evaluator = PanopticEval(gt, pred, gt_folder=str(gt_dir), pred_folder=str(pred_dir))
    if evaluator.reference_deviations():  # after our validation there should be none
        raise PanopticInputError(f"{gt_json}: not comparable to panopticapi: {evaluator.reference_deviations()}")
    try:
        evaluator.evaluate()
    except ValueError as exc:  # hotcoco's PNG checks; name the files too
        raise PanopticInputError(f"{exc} (ground truth {gt_json} / {gt_dir}, prediction {pred_json} / {pred_dir})") from exc
    raw = evaluator.results()
    result: dict[str, Any] = {}
    for group in GROUPS:
        stats = raw[group]
        if stats["n"] == 0:
            # panopticapi divides by zero here. With no segment at all that is an error; a group
            # absent from the evaluated images (e.g. a small eval.max_images subset without any
            # stuff) is reported as null with n = 0, so All and the other group still come out.
            if group == "All":
                raise PanopticInputError(
                    f"no segment in the ground truth or the predictions of the {len(gt['annotations'])} "
                    f"images of {gt_json}: PQ is undefined")
            log.warning("no %s category occurs in %s or its predictions: %s PQ is undefined (null, n=0)",
                        group.lower(), gt_json, group)
            result[group] = {"pq": None, "sq": None, "rq": None, "n": 0}
            continue
        result[group] = {"pq": float(stats["pq"]), "sq": float(stats["sq"]), "rq": float(stats["rq"]),
                         "n": int(stats["n"])}
    per_class = {}
    for cat_id in categories:
        stats = raw["per_class"].get(cat_id, raw["per_class"].get(str(cat_id)))
        if stats is None or stats["tp"] + stats["fp"] + stats["fn"] == 0:
            per_class[cat_id] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}  # hotcoco says -1, the reference 0.0
        else:
            per_class[cat_id] = {k: float(stats[k]) for k in ("pq", "sq", "rq")}
    result["per_class"] = per_class
    return result


def main(argv: list[str] | None = None) -> int:
    """CLI: evaluate a panoptic prediction and write the result JSON atomically."""
    parser = argparse.ArgumentParser(prog="python -m fisa.metrics.panoptic", description=__doc__.split("\n")[0])
    parser.add_argument("--gt-json", required=True, help="COCO panoptic ground-truth JSON")
    parser.add_argument("--gt-dir", required=True, help="folder of the ground-truth PNGs")
    parser.add_argument("--pred-json", required=True, help="prediction JSON (same format)")
    parser.add_argument("--pred-dir", required=True, help="folder of the predicted PNGs")
    parser.add_argument("--output", required=True, help="where to write the result JSON (fractions)")
    args = parser.parse_args(argv)
    try:
        result = pq_compute(args.gt_json, args.gt_dir, args.pred_json, args.pred_dir)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result["per_class"] = {str(k): v for k, v in result["per_class"].items()}
    atomic_write_json(args.output, result)
    print(" " * 10 + "|    PQ     SQ     RQ     N")
    for group in GROUPS:
        r = result[group]
        if r["n"] == 0:
            print(f"{group:<10}|   n/a    n/a    n/a     0")
            continue
        print(f"{group:<10}| {100 * r['pq']:5.1f}  {100 * r['sq']:5.1f}  {100 * r['rq']:5.1f}  {r['n']:4d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
