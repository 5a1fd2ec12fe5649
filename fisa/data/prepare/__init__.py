"""Prepare downloaded benchmarks into the detectron2 / Mask2Former / FC-CLIP layout.

`prepare_dataset(name, root)` runs the dataset's conversion (one module per dataset),
validates the whole output tree, and only then writes `ROOT/.fisa/<name>.prepare.done`
(JSON: what was prepared, counts, the sha256 of the inputs as recorded by the download
step). `check_only=True` validates an existing tree (e.g. prepared for FC-CLIP) and
writes the marker without converting anything. A failed validation raises PrepareError
and leaves no marker (and removes a stale one).
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from fisa.utils.io import atomic_write_json
from fisa.utils.markers import data_fingerprint, marker_path

from . import ade150, ade847, coco, mapillary, pascal_context, refcoco
from .common import PrepareError

log = logging.getLogger("fisa.data.prepare")

# name -> (prepare(root, workers, all_splits) -> summary, validate(root, all_splits) -> summary)
PREPARERS: dict[str, tuple[Callable, Callable]] = {
    "coco": (coco.prepare, coco.validate),
    "ade150": (ade150.prepare, ade150.validate),
    "ade847": (ade847.prepare, ade847.validate),
    "pc59": (pascal_context.prepare_pc59, pascal_context.validate_pc59),
    "pc459": (pascal_context.prepare_pc459, pascal_context.validate_pc459),
    "mapillary": (mapillary.prepare, mapillary.validate),
    "refcoco": (lambda root, workers=None, all_splits=False: refcoco.prepare(root, "refcoco", workers, all_splits),
                lambda root, all_splits=False: refcoco.validate(root, "refcoco", all_splits)),
    "refcocoplus": (lambda root, workers=None, all_splits=False: refcoco.prepare(root, "refcocoplus", workers, all_splits),
                    lambda root, all_splits=False: refcoco.validate(root, "refcocoplus", all_splits)),
}


def _input_records(root: Path, name: str) -> list[dict]:
    """The download step's records of this dataset's files (sha256 of every input)."""
    dl = marker_path(root, name, "download")
    if not dl.exists():
        return []
    try:
        return json.loads(dl.read_text()).get("files", [])
    except json.JSONDecodeError:
        return []


def check_registry_layout(name: str, root: Path) -> str:
    """Every path the loaders read for the evaluation split (fisa.data.registry's layout) exists.

    Returns "passed"; raises PrepareError naming the missing paths. If the registry cannot be
    loaded (e.g. its class lists are not built), returns "skipped: <why>" so the marker says so.
    """
    try:
        from fisa.data import registry

        meta = registry.get_meta(name)
    except Exception as e:  # noqa: BLE001 - an unbuilt registry must not block data preparation
        log.warning("registry layout check skipped for %s: %s", name, e)
        return f"skipped: {type(e).__name__}: {e}"
    paths = meta.paths(meta.eval_split, root)
    missing = [f"{key} {path}" for key, path in paths.items() if not path.exists()]
    if missing:
        raise PrepareError(f"{name}: prepared, but paths the loaders read are missing: {'; '.join(missing)}")
    return "passed"


def prepared_splits(name: str, all_splits: bool) -> list[str]:
    """The splits prepare writes (and checks): the evaluation split, COCO's training split, and
    with `all_splits` every split of the dataset."""
    from fisa.data import registry

    meta = registry.get_meta(name)
    if all_splits:
        return list(meta.splits)
    return [meta.eval_split] + ([meta.train_split] if name == "coco" else [])


def check_sizes(name: str, root: Path, all_splits: bool, allow_subset: bool) -> list[dict]:
    """Every prepared split's item count against its expected size (fisa.data.registry.check_split_size);
    a mismatch raises PrepareError naming the dataset, the expected and the found count."""
    from fisa.data import registry

    out = []
    for split in prepared_splits(name, all_splits):
        try:
            out.append(registry.check_split_size(name, split, registry.count_split(name, split, root), root,
                                                 allow_subset))
        except registry.DatasetError as e:
            raise PrepareError(str(e)) from None
    return out


def prepare_dataset(name: str, root: str | Path, *, check_only: bool = False, workers: int | None = None,
                    all_splits: bool = False, allow_subset: bool = False) -> dict:
    """Prepare (or, with check_only, only validate) dataset `name` under `root`; write its marker last.

    Every prepared split must have its expected number of images (refs for RefCOCO/+), unless
    `allow_subset`, in which case the marker's `split_sizes` record the subset."""
    if name not in PREPARERS:
        raise PrepareError(f"unknown dataset {name!r}; known: {', '.join(sorted(PREPARERS))}")
    root = Path(root)
    if not root.is_dir():
        raise PrepareError(f"data root does not exist: {root}")
    marker = marker_path(root, name)
    marker.unlink(missing_ok=True)  # a stale marker must not outlive a failed re-run
    prepare_fn, validate_fn = PREPARERS[name]
    if check_only:
        try:
            # sizes first: a tree missing images fails with the counts, not with the first orphan label
            sizes = check_sizes(name, root, all_splits, allow_subset)
            summary = validate_fn(root, all_splits=all_splits)
        except PrepareError as e:
            raise PrepareError(f"{name}: the existing tree under {root} is not a complete prepared dataset: {e}. "
                               f"Run without --check-only to prepare it.") from None
    else:
        summary = prepare_fn(root, workers=workers, all_splits=all_splits)
        sizes = check_sizes(name, root, all_splits, allow_subset)
    registry_check = check_registry_layout(name, root)
    record = {"dataset": name, "stage": "prepare", "root": str(root.resolve()),
              "mode": "check-only" if check_only else "prepared", "all_splits": all_splits,
              "summary": summary, "registry_layout": registry_check,
              "split_sizes": sizes, "allow_subset": allow_subset, "subset": any(s["subset"] for s in sizes),
              "inputs": _input_records(root, name),
              "fingerprint": data_fingerprint(name, root),  # what the marker vouches for (fisa.utils.markers)
              "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_json(marker, record)
    return record


__all__ = ["prepare_dataset", "PREPARERS", "PrepareError"]
