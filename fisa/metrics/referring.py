"""Referring segmentation metrics: overall (cumulative) IoU, mean IoU and precision@0.5..0.9.

The definitions of the LAVT / Mask Grounding evaluation code that the RefCOCO literature
reports (yz93/LAVT-RIS `test.py`): per expression, I = |pred & gt| and U = |pred | gt|;
oIoU = sum(I) / sum(U) over all expressions ("overall IoU", a.k.a. cIoU, the protocol's
headline number); mIoU = mean of I/U over expressions; P@t = share of expressions with
I/U >= t. All in percent. The protocol compares masks at 480x480: LAVT resizes the
target (the refer toolkit's mask) to 480x480 with PIL's NEAREST (`transforms.Resize`,
`--img_size 480`); `protocol_mask` does the same to both masks (config eval.referring_size;
null keeps the original resolution). The paper is silent on an empty prediction for an
empty ground truth (RefCOCO has none; LAVT's code would score 0); we count it as IoU 1
(gRefCOCO's convention for no-target expressions) rather than dividing by zero.

CLI (one mask file per expression, PNG/TIFF, non-zero = foreground, matched by name)::

    python -m fisa.metrics.referring --gt-dir D --pred-dir D --output OUT.json
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from fisa.utils.io import atomic_write_json

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def protocol_mask(mask: Any, size: int | None) -> np.ndarray:
    """A boolean mask as the referring protocol compares it: resized to `size` x `size` with
    PIL's NEAREST, as LAVT resizes its 480x480 targets; `size` None returns it unchanged."""
    mask = np.asarray(mask).astype(bool, copy=False)
    if size is None:
        return mask
    from PIL import Image

    resized = Image.fromarray(mask.astype(np.uint8)).resize((int(size), int(size)), Image.NEAREST)
    return np.asarray(resized).astype(bool)


class ReferringEvaluator:
    """Accumulate per-expression intersections and unions, then report mIoU, oIoU and P@t."""

    def __init__(self, thresholds: Iterable[float] = THRESHOLDS):
        self.thresholds = tuple(thresholds)
        self.reset()

    def reset(self) -> None:
        """Forget every processed expression."""
        self.intersections: list[int] = []
        self.unions: list[int] = []

    def process(self, pred_mask: Any, gt_mask: Any, name: str | None = None) -> float:
        """Add one expression: boolean (or 0/1) masks [H, W] of equal shape; returns its IoU."""
        pred, gt = np.asarray(pred_mask), np.asarray(gt_mask)
        if pred.shape != gt.shape:
            where = f" for {name}" if name else ""
            raise ValueError(f"prediction mask shape {pred.shape} != ground truth mask shape {gt.shape}{where}")
        pred, gt = pred.astype(bool, copy=False), gt.astype(bool, copy=False)
        inter = int(np.count_nonzero(pred & gt))
        union = int(np.count_nonzero(pred | gt))
        self.intersections.append(inter)
        self.unions.append(union)
        return inter / union if union else 1.0

    def merge(self, other: "ReferringEvaluator") -> None:
        """Append another evaluator's expressions (how DDP ranks combine)."""
        self.intersections.extend(other.intersections)
        self.unions.extend(other.unions)

    def evaluate(self) -> dict:
        """{"oIoU", "mIoU", "P@0.5", ..., "P@0.9"} in percent (oIoU = overall IoU, mIoU = mean IoU)."""
        if not self.unions:
            raise ValueError("no expression was processed: referring metrics are undefined")
        inter = np.asarray(self.intersections, dtype=np.float64)
        union = np.asarray(self.unions, dtype=np.float64)
        iou = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)  # both empty: right
        result = {
            "mIoU": 100 * float(iou.mean()),
            "oIoU": 100 * float(inter.sum() / union.sum()) if union.sum() > 0 else 100.0,
        }
        for t in self.thresholds:
            result[f"P@{t}"] = 100 * float(np.mean(iou >= t))
        return result

    @property
    def num_expressions(self) -> int:
        """How many expressions were processed."""
        return len(self.unions)


def evaluate_folders(gt_dir: str | os.PathLike, pred_dir: str | os.PathLike) -> dict:
    """Evaluate each GT mask file in `gt_dir` against the same-named one in `pred_dir`."""
    from fisa.metrics.semantic import label_files, read_label_map

    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    gt_files, pred_files = label_files(gt_dir), label_files(pred_dir)
    if not gt_files:
        raise ValueError(f"no mask files in {gt_dir}")
    missing = [str(gt_files[k]) for k in gt_files if k not in pred_files]
    if missing:
        raise ValueError(f"no prediction in {pred_dir} for {len(missing)} ground-truth mask(s), first: {missing[0]}")
    evaluator = ReferringEvaluator()
    for key, gt_path in gt_files.items():
        evaluator.process(read_label_map(pred_files[key]) > 0, read_label_map(gt_path) > 0,
                          name=f"{pred_files[key]} vs {gt_path}")
    return {**evaluator.evaluate(), "num_expressions": evaluator.num_expressions}


def main(argv: Iterable[str] | None = None) -> int:
    """CLI: evaluate a folder of predicted masks and write the result JSON atomically."""
    parser = argparse.ArgumentParser(prog="python -m fisa.metrics.referring", description=__doc__.split("\n")[0])
    parser.add_argument("--gt-dir", required=True, help="folder of ground-truth masks, one file per expression")
    parser.add_argument("--pred-dir", required=True, help="folder of predicted masks, same file names")
    parser.add_argument("--output", required=True, help="where to write the result JSON (percent)")
    args = parser.parse_args(None if argv is None else list(argv))
    try:
        result = evaluate_folders(args.gt_dir, args.pred_dir)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    atomic_write_json(args.output, result)
    print(f"{result['num_expressions']} expressions: mIoU {result['mIoU']:.2f}  oIoU {result['oIoU']:.2f}  "
          + "  ".join(f"P@{t} {result[f'P@{t}']:.1f}" for t in THRESHOLDS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
