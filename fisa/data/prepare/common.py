"""Helpers shared by the per-dataset preparation modules.

Writes are per output file and atomic (temporary name, then rename), so an interrupted
prepare leaves only complete files; a re-run skips outputs that already exist and
finishes the rest. A dataset is marked prepared only after `validate` has checked the
whole output tree.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from fisa.utils.io import atomic_path, atomic_write_json


class PrepareError(RuntimeError):
    """Raw inputs missing or malformed, or prepared outputs incomplete (the message names the file)."""


def require(path: Path, what: str, hint: str = "") -> Path:
    """Return `path` if it exists, else raise PrepareError naming it and what it should be."""
    if not path.exists():
        msg = f"missing {what}: {path}"
        if hint:
            msg += f" ({hint})"
        raise PrepareError(msg)
    return path


def first_existing(root: Path, candidates: Iterable[str], what: str) -> Path:
    """The first of several accepted locations that exists (reference layouts disagree)."""
    candidates = list(candidates)
    for c in candidates:
        if (root / c).exists():
            return root / c
    raise PrepareError(f"missing {what}: none of {', '.join(str(root / c) for c in candidates)} exists")


def save_png(array: np.ndarray, path: Path) -> None:
    """Write an 8-bit (H,W) or (H,W,3) uint8 PNG atomically."""
    if array.dtype != np.uint8:
        raise PrepareError(f"internal: PNG {path} must be uint8, got {array.dtype}")
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def save_tif16(array: np.ndarray, path: Path) -> None:
    """Write a 16-bit (H,W) label map as TIFF atomically (PIL writes mode I;16, as the references)."""
    if array.dtype != np.uint16:
        raise PrepareError(f"internal: TIFF {path} must be uint16, got {array.dtype}")
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="TIFF")


def save_jpeg_copy(src: Path, dst: Path) -> None:
    """Copy an image byte for byte (the references copy, never re-encode, unresized images)."""
    with atomic_path(dst) as tmp:
        with open(src, "rb") as fi, open(tmp, "wb") as fo:
            while block := fi.read(1 << 20):
                fo.write(block)


def read_image(path: Path) -> np.ndarray:
    """Decode an image (or label PNG) to a numpy array, with a clear error for an unreadable file."""
    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except (OSError, ValueError) as e:
        raise PrepareError(f"cannot read image {path}: {e}") from None


def load_json(path: Path) -> Any:
    """Parse a JSON file with an error that names it."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise PrepareError(f"missing JSON file: {path}") from None
    except json.JSONDecodeError as e:
        raise PrepareError(f"{path} is not valid JSON: {e}") from None


def mask_bbox(mask: np.ndarray) -> list[int]:
    """[x, y, width, height] of a non-empty boolean mask (COCO convention, inclusive extent)."""
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON (sorted keys)."""
    atomic_write_json(path, obj)


def count_files(folder: Path, suffix: str) -> int:
    """Number of files ending in `suffix` directly in `folder` (0 if it does not exist)."""
    if not folder.is_dir():
        return 0
    return sum(1 for p in os.scandir(folder) if p.name.endswith(suffix))


def check_pairs(images: Path, labels: Path, image_suffix: str, label_suffix: str, what: str) -> int:
    """Every image has its label file and vice versa; returns the count, else PrepareError listing a few."""
    if not images.is_dir():
        raise PrepareError(f"{what}: image folder missing: {images}")
    if not labels.is_dir():
        raise PrepareError(f"{what}: label folder missing: {labels}")
    ims = {p.name[: -len(image_suffix)] for p in os.scandir(images) if p.name.endswith(image_suffix)}
    lbs = {p.name[: -len(label_suffix)] for p in os.scandir(labels) if p.name.endswith(label_suffix)}
    if not ims:
        raise PrepareError(f"{what}: no *{image_suffix} images in {images}")
    if ims != lbs:
        no_label = sorted(ims - lbs)[:5]
        no_image = sorted(lbs - ims)[:5]
        raise PrepareError(
            f"{what}: images and labels do not pair up ({len(ims)} images in {images}, {len(lbs)} labels in "
            f"{labels}); images without label e.g. {no_label}, labels without image e.g. {no_image}")
    return len(ims)


def default_workers() -> int:
    """Worker processes: SLURM's CPU allocation when set, else the CPUs this process may use."""
    for var in ("SLURM_CPUS_PER_TASK", "FISA_PREPARE_WORKERS"):
        if os.environ.get(var, "").isdigit():
            return max(1, int(os.environ[var]))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover (macOS)
        return max(1, os.cpu_count() or 1)


def parallel_map(fn, items: list, workers: int | None = None, chunksize: int = 16) -> list:
    """`[fn(x) for x in items]`, over processes when workers > 1 (conversion is CPU-bound PNG coding)."""
    workers = default_workers() if workers is None else workers
    if workers <= 1 or len(items) < 2:
        return [fn(x) for x in items]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(fn, items, chunksize=chunksize))
