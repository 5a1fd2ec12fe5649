"""Hand-made result files for the analysis tests (no engine, no registry needed)."""
from __future__ import annotations

import json
from pathlib import Path

COMMIT = "0123456789abcdef0123"

# Tiny vocabularies standing in for the registry: "tree-merged" is COCO's panoptic name.
VOCABULARIES = {
    "coco": [["person"], ["wall-other-merged", "wall"], ["tree-merged", "tree"], ["sky-other-merged", "sky"]],
    "ade150": [["wall"], ["tree"], ["sky"], ["person", "human"], ["windowpane", "window"], ["skyscraper"],
               ["palm", "palm tree"]],
}


def classes_of(dataset: str) -> list[list[str]]:
    """Synonym lists of the hand-made vocabularies."""
    return VOCABULARIES[dataset]


def write_eval(root: Path, experiment: str, seed: int, dataset: str, metrics: dict, per_class: dict | None = None,
               preset: str = "small", device: str = "cpu", config_hash: str = "cfg0",
               provenance: dict | None = None) -> Path:
    """Write one evaluation JSON where the workflow would, return its path (`provenance`: extra keys)."""
    path = Path(root) / "eval" / experiment / f"seed{seed}" / f"{dataset}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "experiment": experiment, "dataset": dataset, "preset": preset, "seed": seed, "metrics": metrics,
        "per_class": per_class or {},
        "provenance": {"commit": COMMIT, "config_hash": config_hash, "device": device, "seed": seed,
                       **(provenance or {})}}))
    return path


def write_efficiency(root: Path, experiment: str, metrics: dict, device: str = "NVIDIA H200",
                     preset: str = "small", name: str | None = None, seed: int = 0,
                     train_device: str | None = None) -> Path:
    """Write one efficiency JSON (as fisa.engine.efficiency does), return its path."""
    path = Path(root) / "efficiency" / f"{name or experiment}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    prov = {"device": device, "commit": COMMIT, "config_hash": "cfgE"}
    if train_device:
        prov["train_device"] = train_device
    path.write_text(json.dumps({"experiment": experiment, "preset": preset, "seed": seed, "dataset": "ade150",
                                "metrics": metrics, "provenance": prov}))
    return path
