"""Per-class views for the notebooks: two experiments side by side, seen vs unseen, confusions.

Reads `per_class.csv` (never recomputes a metric); the confusion matrix between classes
comes from `fisa.metrics.semantic.SemSegEvaluator` over the saved predictions.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd


def compare(per_class: pd.DataFrame, a: str, b: str, dataset: str, metric: str = "IoU") -> pd.DataFrame:
    """One row per class: `seen`, mean over seeds of `metric` for `a` and `b`, and `a - b`, sorted by it."""
    sel = per_class[(per_class.dataset == dataset) & (per_class.metric == metric) & per_class.experiment.isin([a, b])]
    if sel.empty:
        raise ValueError(f"no per-class {metric} of {a!r} or {b!r} on {dataset!r} in per_class.csv "
                         f"(experiments there: {sorted(per_class.experiment.unique())})")
    wide = sel.groupby(["class", "experiment"]).value.mean().unstack("experiment").reindex(columns=[a, b])
    seen = sel.groupby("class").seen.first()
    out = pd.DataFrame({"class": wide.index, "seen": seen.reindex(wide.index).astype(bool).values,
                        a: wide[a].values, b: wide[b].values})
    out["diff"] = out[a] - out[b]
    return out.sort_values(["diff", "class"], ascending=[False, True], na_position="last").reset_index(drop=True)


def seen_summary(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Mean over classes of `columns`, for seen and unseen classes (and the number of classes)."""
    g = table.groupby(table.seen.map({True: "seen", False: "unseen"}))
    out = g[list(columns)].mean()
    out["classes"] = g.size()
    return out


def worst(table: pd.DataFrame, column: str, k: int = 10) -> pd.DataFrame:
    """The `k` classes with the lowest `column`."""
    return table.dropna(subset=[column]).nsmallest(k, column)


def confusion_matrix(pairs: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int, ignore_label: int) -> np.ndarray:
    """Pixel confusion [pred, gt] of shape [C+1, C+1] (last = ignore) from (prediction, ground truth) pairs."""
    from fisa.metrics.semantic import SemSegEvaluator

    ev = SemSegEvaluator(num_classes, ignore_label)
    for pred, gt in pairs:
        ev.process(pred, gt)
    return ev.confusion_matrix


def prediction_pairs(pred_dir: str | Path, gt_of: dict, stems: Sequence[str] | None = None):
    """Yield (prediction, ground truth) for the saved predictions in `pred_dir` whose stem is in `gt_of`."""
    from fisa.metrics.semantic import read_label_map

    pred_dir = Path(pred_dir)
    stems = sorted(p.stem for p in pred_dir.glob("*.png") if p.stem in gt_of) if stems is None else stems
    for stem in stems:
        yield read_label_map(pred_dir / f"{stem}.png"), np.asarray(gt_of[stem])


def top_confusions(cm: np.ndarray, class_names: Sequence[str], k: int = 10) -> pd.DataFrame:
    """The `k` largest off-diagonal entries: ground-truth class, predicted class, pixels, share of the GT class."""
    c = len(class_names)
    m = cm[:c, :c].astype(np.float64)      # drop the ignore row/column
    gt_pixels = cm[:, :c].sum(axis=0)      # every GT pixel of a class, wherever it was predicted
    off = m.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:k]
    rows = []
    for flat in order:
        p, g = np.unravel_index(flat, off.shape)
        if off[p, g] <= 0:
            break
        rows.append({"ground truth": class_names[g], "predicted": class_names[p], "pixels": int(off[p, g]),
                     "share of ground truth": float(off[p, g] / gt_pixels[g]) if gt_pixels[g] else np.nan})
    return pd.DataFrame(rows, columns=["ground truth", "predicted", "pixels", "share of ground truth"])
