"""Done-markers that say what they vouch for, and the checks their consumers run.

A marker (a training run's `done.json`, a dataset's `<root>/.fisa/<name>.prepare.done`) is
written last and atomically, so it never exists for a failed job. That is not enough: a file
it vouches for can be deleted or damaged afterwards, and the workflow would take the marker
as done. So each marker records what it vouches for:

- a run's `done.json`: `files`, the run's output files with their size and SHA-256 (a few
  MB: the trainable weights and the resolved config);
- a dataset marker: `fingerprint`, every path the loaders read (for every split) with, for
  a file, its size and, for a folder, its number of entries. Counting entries lists each
  folder once (no hashing, no stat of every image), so checking COCO costs a fraction of
  a second; it catches a deleted or half-copied tree, not an edited pixel.

Consumers (evaluation, training, efficiency) call `check_run_done` / `check_data_marker`
before use. A mismatch raises `MarkerError`, one line naming the file and the command
that re-creates only it; nothing is deleted.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from fisa.utils.errors import FisaError
from fisa.utils.io import sha256_of

RUN_DONE = "done.json"
RUN_FILES = ("model_final.pt", "run_config.yaml")  # what a finished run's done.json vouches for


MARKER_DIR = ".fisa"  # <data root>/.fisa/<name>.<stage>.done


class MarkerError(FisaError):
    """A done-marker is missing, unreadable, or vouches for files that changed."""


def marker_path(root: str | os.PathLike, name: str, stage: str = "prepare") -> Path:
    """`<root>/.fisa/<name>.<stage>.done` (stage: download | prepare): a data stage's completion
    marker, written atomically and last (the workflow's output; workflow/rules/common.smk
    `data_marker` spells the same path)."""
    return Path(root) / MARKER_DIR / f"{name}.{stage}.done"


def file_records(base: str | os.PathLike, names: Iterable[str]) -> list[dict]:
    """[{path (relative to base), bytes, sha256}] of the files `names` under `base`."""
    base = Path(base)
    return [{"path": n, "bytes": (base / n).stat().st_size, "sha256": sha256_of(base / n)} for n in names]


def _read_marker(path: Path, fix: str) -> dict:
    if not path.exists():
        raise MarkerError(path, "missing", fix)
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MarkerError(path, f"unreadable ({type(e).__name__}: {e})", fix) from None
    if not isinstance(record, dict):
        raise MarkerError(path, "not a JSON object", fix)
    return record


def _rerun_fix(marker: Path, note: str = "") -> str:
    return f"re-create only it: `snakemake -f {marker}` (with your usual --cores or --profile){note}"


# ---- training runs ----------------------------------------------------------------------------
def run_done_record(run_dir: str | os.PathLike, record: dict, files: Iterable[str] = RUN_FILES) -> dict:
    """`record` plus `files`: what `done.json` of `run_dir` vouches for (sizes and SHA-256 of
    those of `files` that exist; `model_final.pt` always does when training finished)."""
    return {**record, "files": file_records(run_dir, [f for f in files if (Path(run_dir) / f).is_file()])}


def check_run_done(run_dir: str | os.PathLike) -> dict:
    """The run's `done.json`, after checking every file it lists (size, then SHA-256).

    Raises MarkerError naming the missing/changed file and the command that retrains only
    this run (it resumes from its last intact checkpoint). A `done.json` from before
    markers listed files vouches for `model_final.pt`'s existence only.
    """
    run_dir = Path(run_dir)
    marker = run_dir / RUN_DONE
    fix = _rerun_fix(marker, " (training resumes from its last intact checkpoint)")
    record = _read_marker(marker, fix)
    files = record.get("files")
    if files is None:  # written before done.json listed its files
        files = [{"path": RUN_FILES[0]}]
    for entry in files:
        path = run_dir / entry["path"]
        if not path.is_file():
            raise MarkerError(path, f"missing, but {marker} vouches for it", fix)
        if "bytes" in entry and path.stat().st_size != entry["bytes"]:
            raise MarkerError(path, f"{path.stat().st_size} bytes, {marker} recorded {entry['bytes']} "
                                    "(truncated or replaced)", fix)
        if "sha256" in entry and sha256_of(path) != entry["sha256"]:
            raise MarkerError(path, f"SHA-256 differs from the one {marker} recorded (damaged or replaced)", fix)
    return record


# ---- datasets ----------------------------------------------------------------------------------
def _dataset_paths(name: str, root: Path) -> dict[str, Path]:
    """Every path the loaders read for dataset `name`, over all its splits ({"<split>.<key>": path})."""
    from fisa.data.registry import get_meta

    meta = get_meta(name)
    out = {}
    for split in meta.splits:
        for key, path in meta.paths(split, root).items():
            out[f"{split}.{key}"] = Path(path)
    return out


def data_fingerprint(name: str, root: str | os.PathLike) -> dict:
    """{"<split>.<key>": {path (relative to root), bytes | entries}} of the paths present now.

    Recorded by whatever writes the dataset's prepare marker; a split that is not
    prepared (e.g. the training split of an evaluation-only dataset) is simply absent.
    """
    root = Path(root)
    fingerprint = {}
    for key, path in _dataset_paths(name, root).items():
        rel = os.path.relpath(path, root)
        if path.is_file():
            fingerprint[key] = {"path": rel, "bytes": path.stat().st_size}
        elif path.is_dir():
            with os.scandir(path) as it:
                fingerprint[key] = {"path": rel, "entries": sum(1 for _ in it)}
    return fingerprint


def check_data_marker(name: str, root: str | os.PathLike) -> dict:
    """Dataset `name`'s prepare marker under `root`, after checking the tree still matches it.

    The fingerprint's paths are relative to `root`, so a moved data root still matches.
    Raises MarkerError naming the marker or the first path that differs, and the command
    that re-creates only this dataset.
    """
    root = Path(root)
    marker = marker_path(root, name)
    fix = _rerun_fix(marker, " (runs already trained or evaluated on it are not redone)")
    record = _read_marker(marker, fix)
    fingerprint = record.get("fingerprint")
    if fingerprint is None:  # a marker from before fingerprints: the loaders' eval paths must exist
        from fisa.data.registry import get_meta

        meta = get_meta(name)
        fingerprint = {k: {"path": os.path.relpath(p, root)} for k, p in meta.paths(meta.eval_split, root).items()}
    for entry in fingerprint.values():
        path = root / entry["path"]
        if not path.exists():
            raise MarkerError(path, f"missing, but {marker} vouches for it", fix)
        if "bytes" in entry and path.stat().st_size != entry["bytes"]:
            raise MarkerError(path, f"{path.stat().st_size} bytes, {marker} recorded {entry['bytes']}", fix)
        if "entries" in entry:
            with os.scandir(path) as it:
                n = sum(1 for _ in it)
            if n != entry["entries"]:
                raise MarkerError(path, f"{n} entries, {marker} recorded {entry['entries']} "
                                        "(files deleted or added)", fix)
    return record
