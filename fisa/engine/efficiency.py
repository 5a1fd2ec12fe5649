"""`python -m fisa.engine.efficiency`: Table 2's numbers for one experiment.

    python -m fisa.engine.efficiency --run-config results/small/configs/runs/fisa_main/seed0.yaml \
        --dataset ade150 --output results/small/efficiency/fisa_main.json

The run config is the only config read; the trained model is its `checkpoints.run_dir`'s.

- FPS: model + post-processing on `efficiency.images` images of the dataset (ADE-150 by
  default) at the paper's test resolution, after `efficiency.warmup` warm-up images;
  1 / median seconds per image (CUDA synchronised around each image).
- memory_GB: peak CUDA memory allocated during those images (reset before); on CPU the
  process's peak resident set size (it includes the loaded model; said in the record).
- precision: `efficiency.precision` (fp32 | tf32 | bf16 autocast, fisa.engine.precision); a
  precision the device cannot run fails, and the record states the one used.
- trainable_params: parameters with requires_grad in the experiment's variant.
- gpu_hours, iterations: from the training run's provenance.json (wall time x processes,
  summed over restarts; the device that trained it is recorded beside).
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import time
from pathlib import Path

import torch

from fisa.config import config_hash, load_run_config
from fisa.engine import provenance
from fisa.engine.cli import add_run_config_arg, run_main, setup_logging
from fisa.engine.inference import predict, run_model
from fisa.engine.precision import precision_context
from fisa.engine.run_model import load_run_model, pick_device
from fisa.utils.io import atomic_write_json

log = logging.getLogger("fisa.efficiency")


def peak_memory_gb(device: torch.device) -> tuple[float, str]:
    """(peak memory in GB, what was measured)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9, "torch.cuda.max_memory_allocated (inference)"
    # Linux reports ru_maxrss in KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, "peak RSS of the process (CPU)"


def time_inference(model, images: list[torch.Tensor], vocabulary, meta, eval_cfg: dict, warmup: int,
                   device: torch.device, precision: str = "fp32") -> list[float]:
    """Seconds per image (model + post-processing) for `images`, after `warmup` passes, in `precision`."""
    tasks = set(meta.tasks) & {"semantic", "panoptic"}
    ms, mx = int(eval_cfg["min_size"]), int(eval_cfg["max_size"])
    autocast = precision_context(precision, device, "efficiency.precision")
    for i in range(warmup):
        with autocast:
            predict(run_model(model, images[i % len(images)], vocabulary, ms, mx), tasks, meta.thing, eval_cfg)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for img in images:
        t0 = time.perf_counter()
        with autocast:
            predict(run_model(model, img, vocabulary, ms, mx), tasks, meta.thing, eval_cfg)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - t0)
    return seconds


def efficiency(resolved: dict, run_dir: str | Path | None, output: str | Path, dataset_name: str = "ade150") -> dict:
    """Measure and write the efficiency record of `resolved`; returns it."""
    from fisa.data.datasets import build_dataset
    from fisa.data.registry import get_meta

    device = pick_device(resolved)
    model, ckpt = load_run_model(resolved, run_dir, device)
    model.eval()
    meta = get_meta(dataset_name)
    dataset = build_dataset(dataset_name, meta.eval_split, resolved["data_root"], require_marker=True)
    eff = resolved["efficiency"]
    count = min(int(eff["images"]), len(dataset))
    images = [dataset[i]["image"] for i in range(count)]
    with torch.no_grad():
        vocabulary = model.encode_vocabulary(meta.classes)
    precision = eff["precision"]
    seconds = time_inference(model, images, vocabulary, meta, resolved["eval"], int(eff["warmup"]), device,
                             precision)
    memory, memory_kind = peak_memory_gb(device)
    train_prov = {}
    if run_dir is not None and (Path(run_dir) / "provenance.json").exists():
        train_prov = json.loads((Path(run_dir) / "provenance.json").read_text())
    record = {
        "experiment": resolved["experiment"], "preset": resolved["preset"], "dataset": dataset_name,
        "metrics": {
            "FPS": 1.0 / statistics.median(seconds),
            "memory_GB": memory,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "gpu_hours": train_prov.get("gpu_hours", 0.0),
            "iterations": int(resolved["train"]["iterations"]),
        },
        "provenance": {
            "device": provenance.device_name(device), "memory_measure": memory_kind, "precision": precision,
            "train_device": train_prov.get("device"), "train_world_size": train_prov.get("world_size"),
            "images": count, "warmup": int(eff["warmup"]),
            "resolution": {"min_size": resolved["eval"]["min_size"], "max_size": resolved["eval"]["max_size"]},
            "seconds_per_image": [round(s, 5) for s in seconds], "commit": provenance.git_commit(),
            "config_hash": config_hash(resolved), "code_version": resolved.get("code_version"),
            "checkpoint": str(ckpt) if ckpt else None,
            "versions": provenance.library_versions(), "finished": provenance.now(),
        },
    }
    atomic_write_json(output, record)
    log.info("%s: %.2f FPS, %.2f GB (%s), %d trainable parameters", resolved["experiment"],
             record["metrics"]["FPS"], memory, record["provenance"]["device"], record["metrics"]["trainable_params"])
    return record


def main(argv=None) -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_config_arg(ap)
    ap.add_argument("--dataset", default=None,
                    help="images to time (default: the experiment's first dataset; ADE-150 as Table 2)")
    ap.add_argument("--output", required=True)
    args = ap.parse_args(argv)
    setup_logging()

    def body():
        resolved = load_run_config(args.run_config)
        efficiency(resolved, resolved["checkpoints"]["run_dir"], args.output, args.dataset or resolved["datasets"][0])

    run_main(body)


if __name__ == "__main__":
    from fisa.utils.errors import run_cli

    run_cli(main)  # one `error: <file>: <what> — <fix>` line for a user-fixable error
