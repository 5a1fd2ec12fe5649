"""Provenance: which code, libraries, data and hardware produced a result."""
from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import platform
import os
import socket
from pathlib import Path

import torch

from fisa.config import REPO_ROOT, code_version
import json

from fisa.utils.io import atomic_write_json, sha256_of
from fisa.utils.markers import MARKER_DIR

_LIBRARIES = ("torch", "torchvision", "open_clip_torch", "transformers", "peft", "numpy",
              "scipy", "hotcoco", "pycocotools", "fisa-repro")


def git_commit(repo: Path = REPO_ROOT) -> str:
    """The checked-out commit, with `-dirty` if tracked files differ; 'unknown' outside git
    (`fisa.config.code_version`, also recorded in every run config)."""
    return code_version(repo)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that determine results."""
    out = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_name(device: torch.device | str) -> str:
    """A human-readable name of the device: the GPU model, or the CPU model and core count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu} ({torch.get_num_threads()} threads)"


def collect(device: torch.device | str, world_size: int = 1) -> dict:
    """Commit, library versions, host, device name and world size, as a JSON-able dict."""
    return {
        "commit": git_commit(),
        "versions": library_versions(),
        "host": socket.gethostname(),
        "device": device_name(device),
        "devices": [device_name(torch.device("cuda", i)) for i in range(torch.cuda.device_count())]
        if torch.device(device).type == "cuda" else [device_name(device)],
        "world_size": world_size,
        "started": now(),
    }


def now() -> str:
    """UTC timestamp in ISO 8601."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# What a split's checksum covers: its annotations (ground truth), not its images. Images are
# most of the bytes (RefCOCO's are COCO train2014, 13 GB); a changed image is caught by the data
# marker's fingerprint only as a size or count change.
ANNOTATION_KEYS = ("sem_seg_dir", "panoptic_json", "panoptic_dir", "refs", "instances_json")


def dataset_checksum(name: str, split: str, data_root: str | os.PathLike) -> str:
    """"sha256:<hex>" of the prepared split's annotations: SHA-256 over the sorted lines
    "<path relative to data_root>\t<bytes>\t<sha256 of the file>" of every annotation file (the
    split's ANNOTATION_KEYS of `fisa.data.registry`; folders recursively). Independent of where the
    data root lies; any changed, added or removed annotation file changes it. Files shared by
    several splits (RefCOCO's refs) are hashed whole."""
    from fisa.data.registry import get_meta

    root = Path(data_root)
    paths = get_meta(name).paths(split, root)
    files: list[Path] = []
    for key in ANNOTATION_KEYS:
        path = paths.get(key)
        if path is None:
            continue
        if path.is_dir():
            files += [p for p in path.rglob("*") if p.is_file()]
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: dataset {name!r} split {split!r}: {key} is missing "
                                    "(prepare the dataset again)")
    # Every evaluation of the split asks for it (dozens per split on the paper preset, thousands of
    # files): the result is kept beside the data markers, keyed by each file's path, size and mtime,
    # and the files are hashed again only when one of those changed. A read-only data root caches nothing.
    stats = sorted((p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    key = hashlib.sha256(json.dumps(stats).encode()).hexdigest()
    cache = root / MARKER_DIR / f"{name}.{split}.annotations.json"
    try:
        cached = json.loads(cache.read_text())
        if cached.get("stat_key") == key:
            return cached["checksum"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    lines = sorted(f"{p.relative_to(root).as_posix()}\t{p.stat().st_size}\t{sha256_of(p)}" for p in files)
    checksum = "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()
    try:
        atomic_write_json(cache, {"stat_key": key, "checksum": checksum})
    except OSError:
        pass
    return checksum
