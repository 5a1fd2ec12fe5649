"""Provenance: which code, libraries and hardware produced a result."""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import platform
import socket
from pathlib import Path

import torch

from fisa.config import REPO_ROOT, code_version

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
