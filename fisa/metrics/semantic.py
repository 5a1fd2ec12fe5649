"""Semantic segmentation metrics exactly as detectron2's `SemSegEvaluator` computes them (both of its mIoU rules).

An integer confusion matrix accumulated with `numpy.bincount`, then detectron2's formulas:
a class counts in mIoU / mACC only if it has ground-truth pixels (the rule since 2022; the
older rule averaged over classes with GT *or* prediction, which is what torchmetrics'
`MulticlassJaccardIndex` still does, in float32: fc-clip issue #27 shows PC-459 moving by
about 4 points between the two); pixels whose GT is the ignore label count neither as GT nor
as prediction. Values in percent, as detectron2 reports them.

No PyPI metric matches this rule exactly (see the module docs in docs/metrics.md), hence the
few lines of numpy here.

CLI::

    python -m fisa.metrics.semantic --gt-dir D --pred-dir D --num-classes N --ignore-label L --output OUT.json
"""
from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from fisa.utils.io import atomic_write_json

LABEL_SUFFIXES = (".png", ".tif", ".tiff")

# The two mIoU rules detectron2's SemSegEvaluator has had, from the same confusion matrix.
# detectron2 commit f3c1bc199a7ab0fe1d0d7a3b44fa95ec73d7a896 (2022-07-06, "Fix semantic errors
# in code for calculating IoU metrics") changed the denominator; v0.6 (2021-10) and every wheel
# built from it still have the old one. Names say which classes the mean runs over.
MIOU_GT_CLASSES = "mIoU_gt_classes"                  # since f3c1bc1: classes with GT pixels
MIOU_GT_OR_PRED_CLASSES = "mIoU_gt_or_pred_classes"  # up to v0.6: classes with GT or prediction (IoU 0 if no GT)
MIOU_RULES = {
    MIOU_GT_CLASSES: "detectron2 since commit f3c1bc1 (2022-07-06): mean IoU over classes with ground-truth pixels",
    MIOU_GT_OR_PRED_CLASSES: "detectron2 up to v0.6 (before commit f3c1bc1): IoU summed over classes with "
                             "ground-truth pixels, divided by the number of classes with ground truth or prediction",
}


class SemSegEvaluator:
    """Accumulate a confusion matrix over images, then report mIoU, fwIoU, mACC, pACC and per-class IoU.

    The matrix is [C+1, C+1] int64, rows = prediction, columns = ground truth, as detectron2
    lays it out: the last column collects GT ignore pixels (left out of every count), the last
    row predictions equal to the ignore label ("no class": a miss for the GT class, never a
    prediction of any class; detectron2's argmax never produces one, so on its inputs the
    result is identical).
    """

    def __init__(self, num_classes: int, ignore_label: int = 255):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if 0 <= ignore_label < num_classes:
            raise ValueError(f"ignore_label {ignore_label} is a valid class id (num_classes={num_classes})")
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self._tables: dict[int, np.ndarray] = {}
        self.reset()

    def reset(self) -> None:
        """Forget every processed image."""
        self.confusion_matrix = np.zeros((self.num_classes + 1, self.num_classes + 1), dtype=np.int64)

    def _lookup_table(self, dtype: np.dtype) -> np.ndarray:
        """int64 [2^bits]: label -> row/column of the confusion matrix, -1 where invalid."""
        key = np.dtype(dtype).itemsize
        if key not in self._tables:
            values = np.arange(256 ** key, dtype=np.int64)
            table = np.where(values < self.num_classes, values, -1)
            if 0 <= self.ignore_label < table.size:
                table[self.ignore_label] = self.num_classes
            self._tables[key] = table
        return self._tables[key]

    def _labels(self, labels: Any, role: str, name: str | None) -> np.ndarray:
        arr = np.asarray(labels)
        where = f" in {name}" if name else ""
        if arr.dtype.kind not in "iub":
            raise ValueError(f"{role} labels{where} must be integers, got dtype {arr.dtype}")
        if arr.size == 0:
            return arr.reshape(-1)
        if arr.dtype.kind == "b":
            arr = arr.view(np.uint8)  # a bool array would index the table as a mask
        if arr.dtype.kind == "u" and arr.dtype.itemsize <= 2:
            # 8/16-bit label maps (what PNG files hold): one table lookup maps the ignore label to C
            # and invalid labels to -1, cheaper than the comparisons below
            mapped = self._lookup_table(arr.dtype)[arr].reshape(-1)
            if int(arr.max()) >= self.num_classes and int(mapped.min()) < 0:
                bad = arr.reshape(-1)[mapped < 0]
                raise ValueError(
                    f"{role} labels{where} contain {int(bad[0])}, outside 0..{self.num_classes - 1} "
                    f"and not the ignore label {self.ignore_label}")
            return mapped
        if int(arr.min()) >= 0 and int(arr.max()) < self.num_classes:
            return arr.reshape(-1)  # fast path, no copy: every label is a class
        bad = ((arr < 0) | (arr >= self.num_classes)) & (arr != self.ignore_label)
        if bad.any():
            raise ValueError(
                f"{role} labels{where} contain {int(arr[bad][0])}, outside 0..{self.num_classes - 1} "
                f"and not the ignore label {self.ignore_label}")
        # the ignore label maps to the extra row/column C
        return np.where(arr == self.ignore_label, self.num_classes, arr.astype(np.int64)).reshape(-1)

    def process(self, pred: Any, gt: Any, name: str | None = None) -> None:
        """Add one image: `pred`, `gt` int arrays [H, W] (numpy or CPU tensors) of equal shape.

        `name` (e.g. the file name) is only used in error messages.
        """
        pred_shape, gt_shape = np.shape(pred), np.shape(gt)
        if pred_shape != gt_shape:
            where = f" for {name}" if name else ""
            raise ValueError(f"prediction shape {tuple(pred_shape)} != ground truth shape {tuple(gt_shape)}{where}")
        p = self._labels(pred, "prediction", name)
        g = self._labels(gt, "ground truth", name)
        n = self.num_classes + 1
        index = p * n if p.dtype == np.int64 else p.astype(np.int64) * n  # [H*W] row-major into [C+1, C+1]
        index += g
        self.confusion_matrix += np.bincount(index, minlength=n * n).reshape(n, n)

    def merge(self, other: "SemSegEvaluator | np.ndarray") -> None:
        """Add another evaluator's (or a gathered) confusion matrix: how DDP ranks combine."""
        matrix = other.confusion_matrix if isinstance(other, SemSegEvaluator) else np.asarray(other)
        if matrix.shape != self.confusion_matrix.shape:
            raise ValueError(f"cannot merge a {matrix.shape} confusion matrix into {self.confusion_matrix.shape}")
        self.confusion_matrix += matrix.astype(np.int64)

    def evaluate(self) -> dict:
        """{"mIoU", "fwIoU", "mACC", "pACC": float (percent), "IoU": [float | None] * C, "ACC": [...]}.

        `mIoU` is the current rule; the result also holds both rules under their names
        (`MIOU_GT_CLASSES` = `mIoU`, `MIOU_GT_OR_PRED_CLASSES`), see `MIOU_RULES`.
        """
        cm = self.confusion_matrix
        tp = cm.diagonal()[:-1].astype(np.float64)  # [C]
        pos_gt = cm[:, :-1].sum(axis=0).astype(np.float64)  # GT pixels per class (ignore-label predictions are misses)
        pos_pred = cm[:-1, :-1].sum(axis=1).astype(np.float64)  # predictions on non-ignore GT pixels
        if pos_gt.sum() == 0:
            raise ValueError("no ground-truth pixel outside the ignore label was processed: mIoU is undefined")
        acc_valid = pos_gt > 0
        union = pos_gt + pos_pred - tp
        iou_valid = acc_valid & (union > 0)
        acc = np.divide(tp, pos_gt, out=np.zeros_like(tp), where=acc_valid)
        iou = np.divide(tp, union, out=np.zeros_like(tp), where=iou_valid)
        class_weights = pos_gt / pos_gt.sum()
        miou = 100 * float(iou[iou_valid].sum() / iou_valid.sum())
        # pre-2022: the same sum over GT classes, divided by the classes with GT or a prediction
        # (a class only predicted adds an IoU of 0); fwIoU, mACC, pACC are the same under both
        gt_or_pred = int(((pos_gt + pos_pred) > 0).sum())
        return {
            "mIoU": miou,
            MIOU_GT_CLASSES: miou,
            MIOU_GT_OR_PRED_CLASSES: 100 * float(iou[iou_valid].sum() / gt_or_pred),
            "fwIoU": 100 * float((iou[iou_valid] * class_weights[iou_valid]).sum()),
            "mACC": 100 * float(acc[acc_valid].sum() / acc_valid.sum()),
            "pACC": 100 * float(tp.sum() / pos_gt.sum()),
            "IoU": [100 * float(v) if ok else None for v, ok in zip(iou, iou_valid)],
            "ACC": [100 * float(v) if ok else None for v, ok in zip(acc, acc_valid)],
        }


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """A single-channel label map (PNG or TIFF, 8- or 16-bit) -> int array [H, W]."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as img:
                if img.mode not in ("L", "P", "I;16", "I;16B", "I;16L", "I", "1"):
                    raise ValueError(f"mode {img.mode}, expected a single-channel label map")
                arr = np.array(img)
    except Exception as exc:  # PIL and tifffile raise many types for a bad file
        raise ValueError(f"cannot read label map {path}: {exc}") from exc
    if arr.ndim != 2:
        raise ValueError(f"label map {path} has shape {arr.shape}, expected [H, W]")
    return arr


def label_files(folder: Path) -> dict[str, Path]:
    """Label files under `folder` keyed by their relative path without suffix."""
    if not folder.is_dir():
        raise ValueError(f"folder {folder} does not exist")
    files: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in LABEL_SUFFIXES and path.is_file():
            key = str(path.relative_to(folder).with_suffix(""))
            if key in files:
                raise ValueError(f"{files[key]} and {path} are two label maps for the same image")
            files[key] = path
    return files


def evaluate_folders(gt_dir: str | os.PathLike, pred_dir: str | os.PathLike, num_classes: int,
                     ignore_label: int, workers: int = 2) -> dict:
    """Evaluate every GT label map in `gt_dir` against the same-named one in `pred_dir`.

    Files are matched by relative path without suffix (a .png prediction for a .tif GT is
    fine). A GT without prediction is an error; predictions without GT are ignored. Returns
    `SemSegEvaluator.evaluate()` plus "num_images".
    """
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    gt_files, pred_files = label_files(gt_dir), label_files(pred_dir)
    if not gt_files:
        raise ValueError(f"no label maps ({', '.join(LABEL_SUFFIXES)}) in {gt_dir}")
    missing = [str(gt_files[k]) for k in gt_files if k not in pred_files]
    if missing:
        raise ValueError(f"no prediction in {pred_dir} for {len(missing)} ground-truth file(s), first: {missing[0]}")
    evaluator = SemSegEvaluator(num_classes, ignore_label)
    keys = list(gt_files)

    def load(key: str) -> tuple[np.ndarray, np.ndarray]:
        return read_label_map(pred_files[key]), read_label_map(gt_files[key])

    # decoding dominates and releases the GIL: threads overlap it with the counting
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for key, (pred, gt) in zip(keys, pool.map(load, keys)):
            evaluator.process(pred, gt, name=f"{pred_files[key]} vs {gt_files[key]}")
    result = evaluator.evaluate()
    result["num_images"] = len(keys)
    return result


def main(argv: Iterable[str] | None = None) -> int:
    """CLI: evaluate a folder of predicted label maps and write the result JSON atomically."""
    parser = argparse.ArgumentParser(prog="python -m fisa.metrics.semantic", description=__doc__.split("\n")[0])
    parser.add_argument("--gt-dir", required=True, help="folder of ground-truth label maps (PNG/TIFF)")
    parser.add_argument("--pred-dir", required=True, help="folder of predicted label maps, same file names")
    parser.add_argument("--num-classes", required=True, type=int)
    parser.add_argument("--ignore-label", required=True, type=int, help="255, or 65535 for 16-bit labels")
    parser.add_argument("--output", required=True, help="where to write the result JSON (percent)")
    parser.add_argument("--workers", type=int, default=2, help="threads reading files (default 2)")
    args = parser.parse_args(None if argv is None else list(argv))
    try:
        result = evaluate_folders(args.gt_dir, args.pred_dir, args.num_classes, args.ignore_label, args.workers)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    atomic_write_json(args.output, result)
    print(f"{result['num_images']} images: mIoU {result['mIoU']:.2f}  fwIoU {result['fwIoU']:.2f}  "
          f"mACC {result['mACC']:.2f}  pACC {result['pACC']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
