"""Qualitative panels: image, ground truth and each experiment's semantic prediction.

Predictions are the evaluation's PNGs `results/<P>/eval/<E>/seed<k>/<D>/semantic/<stem>.png`
(contiguous class ids, 16-bit when > 255 classes); images and ground truth come from the
dataset (`fisa.data.datasets.build_dataset`). Colours come from one fixed palette, so
a class has the same colour in every panel and every figure.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image


def palette(num_classes: int, seed: int = 0) -> np.ndarray:
    """A fixed random palette [num_classes, 3] uint8 (the same for every figure and notebook)."""
    rng = np.random.default_rng(seed)
    return rng.integers(40, 256, size=(num_classes, 3), dtype=np.uint8)


def colorize(labels: np.ndarray, colors: np.ndarray, ignore_label: int | None = 255) -> np.ndarray:
    """[H,W] class ids -> [H,W,3] uint8; ignored / out-of-range pixels black."""
    labels = np.asarray(labels).astype(np.int64)
    out = np.zeros(labels.shape + (3,), dtype=np.uint8)
    valid = (labels >= 0) & (labels < len(colors))
    if ignore_label is not None:
        valid &= labels != ignore_label
    out[valid] = colors[labels[valid]]
    return out


def prediction_dir(results_dir: str | Path, experiment: str, seed: int, dataset: str) -> Path:
    """Where the evaluation writes semantic predictions of one run on one dataset."""
    return Path(results_dir) / "eval" / experiment / f"seed{seed}" / dataset / "semantic"


def load_prediction(path: str | Path) -> np.ndarray:
    """A prediction PNG (8- or 16-bit) as int64 [H,W] class ids."""
    with Image.open(path) as im:
        return np.array(im).astype(np.int64)


def common_stems(dirs: Iterable[Path]) -> list[str]:
    """File stems predicted by every experiment, sorted (a deterministic choice of images)."""
    sets = [{p.stem for p in Path(d).glob("*.png")} for d in dirs]
    return sorted(set.intersection(*sets)) if sets else []


def choose_images(stems: Sequence[str], n: int, chosen: Sequence[str] | None = None) -> list[str]:
    """`chosen` stems if given (validated), else the first `n` of `stems`."""
    if chosen:
        missing = [s for s in chosen if s not in stems]
        if missing:
            raise FileNotFoundError(f"no prediction of every experiment for images {missing}")
        return list(chosen)
    return list(stems[:n])


def find_items(dataset, stems: Sequence[str]) -> dict[str, dict]:
    """Dataset items whose `file_name` stem is in `stems` (stops as soon as all are found)."""
    wanted, found = set(stems), {}
    for i in range(len(dataset)):
        item = dataset[i]
        stem = Path(str(item["file_name"])).stem
        if stem in wanted:
            found[stem] = item
            if len(found) == len(wanted):
                break
    missing = wanted - set(found)
    if missing:
        raise KeyError(f"images {sorted(missing)} are not in the dataset")
    return found


def panels(fig_axes, items: Mapping[str, dict], pred_dirs: Mapping[str, Path], colors: np.ndarray,
           ignore_label: int | None, titles: Mapping[str, str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Draw one row per image: image | GT | one column per experiment. Returns the label maps drawn.

    `titles` maps an experiment to its column title (default: the experiment name).
    """
    axes = np.atleast_2d(fig_axes)
    shown: dict[str, dict[str, np.ndarray]] = {}
    titles = ["image", "ground truth"] + [(titles or {}).get(e, e) for e in pred_dirs]
    for r, (stem, item) in enumerate(items.items()):
        image = np.asarray(item["image"]).transpose(1, 2, 0)  # [3,H,W] -> [H,W,3]
        gt = np.asarray(item["sem_seg"]).astype(np.int64)
        maps = {"ground truth": gt}
        for label, d in pred_dirs.items():
            pred = load_prediction(Path(d) / f"{stem}.png")
            if pred.shape != gt.shape:
                raise ValueError(f"{Path(d) / (stem + '.png')}: prediction {pred.shape} vs ground truth {gt.shape}")
            maps[label] = pred
        shown[stem] = maps
        row = [image] + [colorize(m, colors, ignore_label) for m in maps.values()]
        for c, (ax, im) in enumerate(zip(axes[r], row)):
            ax.imshow(im, interpolation="nearest")
            ax.set_xticks([]); ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c])
        axes[r][0].set_ylabel(stem, fontsize=6)
    return shown


class FolderDataset:
    """Images + ground-truth label maps from two folders (matched by file stem).

    For prepared trees outside the registry (and for tests): items are dicts like the
    registry's datasets: `image` uint8 [3,H,W], `file_name`, `sem_seg` int64 [H,W].
    """

    def __init__(self, image_dir: str | Path, gt_dir: str | Path):
        self.image_dir, self.gt_dir = Path(image_dir), Path(gt_dir)
        gts = {p.stem: p for p in sorted(self.gt_dir.glob("*.png"))}
        self.pairs = [(p, gts[p.stem]) for p in sorted(self.image_dir.iterdir())
                      if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.stem in gts]
        if not self.pairs:
            raise FileNotFoundError(f"no image in {self.image_dir} has a label map in {self.gt_dir}")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        from fisa.metrics.semantic import read_label_map

        image_path, gt_path = self.pairs[i]
        with Image.open(image_path) as im:
            image = np.array(im.convert("RGB")).transpose(2, 0, 1)  # [H,W,3] -> [3,H,W]
        return {"image": image, "file_name": image_path.name, "sem_seg": read_label_map(gt_path).astype(np.int64)}
