"""Checkpoints that survive preemption: atomic writes, rotation, corruption detection.

A checkpoint is `ckpt_<iteration:08d>.pt` plus a sidecar `ckpt_<iteration:08d>.json`
holding its SHA-256 and size. Both are written atomically, the sidecar last, so a
checkpoint without a matching sidecar is by construction incomplete or damaged.
`latest_valid()` walks the checkpoints newest first and returns the first one whose
bytes match its sidecar and that `torch.load` reads; damaged ones are reported and
skipped (never deleted: a human may want to look at them).
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from fisa.utils.io import atomic_torch_save, atomic_write_json, sha256_of

log = logging.getLogger(__name__)

_NAME = re.compile(r"^ckpt_(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was required; the message names the files tried."""


class CheckpointManager:
    """Saves, rotates and finds the newest intact checkpoint in `directory`.

    `keep` newest checkpoints are kept; older ones are removed after a new one is
    safely on disk (so there is always at least one intact checkpoint).
    """

    def __init__(self, directory: str | Path, keep: int = 2):
        if keep < 1:
            raise ValueError(f"CheckpointManager keep must be >= 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep

    def path_for(self, iteration: int) -> Path:
        """The checkpoint file for `iteration`."""
        return self.directory / f"ckpt_{iteration:08d}.pt"

    def list(self) -> list[tuple[int, Path]]:
        """(iteration, path) of every checkpoint file present, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for p in self.directory.iterdir():
            m = _NAME.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def save(self, state: dict[str, Any], iteration: int) -> Path:
        """Write `state` as the checkpoint of `iteration` (atomic), then rotate old ones."""
        path = self.path_for(iteration)
        atomic_torch_save(path, state)
        atomic_write_json(path.with_suffix(".json"), {
            "iteration": iteration, "sha256": sha256_of(path), "bytes": path.stat().st_size,
        })
        for _, old in self.list()[:-self.keep]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
        return path

    def verify(self, path: Path) -> str | None:
        """None if `path` matches its sidecar, else the reason it does not."""
        sidecar = path.with_suffix(".json")
        if not sidecar.exists():
            return f"no sidecar {sidecar.name} (write interrupted?)"
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError) as e:
            return f"unreadable sidecar {sidecar.name}: {e}"
        size = path.stat().st_size
        if size != meta.get("bytes"):
            return f"size {size} != {meta.get('bytes')} recorded in {sidecar.name}"
        if sha256_of(path) != meta.get("sha256"):
            return f"SHA-256 differs from {sidecar.name}"
        return None

    def latest_valid(self, map_location: str | torch.device = "cpu") -> tuple[int, Path, dict] | None:
        """(iteration, path, state) of the newest intact checkpoint; None if there is none.

        Corrupted or incomplete checkpoints are logged with the reason and skipped.
        """
        for iteration, path in reversed(self.list()):
            reason = self.verify(path)
            if reason is None:
                try:
                    # the harness wrote it: tensors, numbers, strings only
                    state = torch.load(path, map_location=map_location, weights_only=True)
                except Exception as e:  # a torch.load failure means a damaged file, whatever its type
                    reason = f"torch.load failed: {type(e).__name__}: {e}"
                else:
                    return iteration, path, state
            log.warning("skipping corrupted checkpoint %s: %s", path, reason)
        return None
