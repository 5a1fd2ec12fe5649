"""Benchmark: images/s of the PQ and mIoU evaluation against the straightforward references.

Writes synthetic COCO-panoptic and semantic label maps (`fisa.metrics.synthetic`), then times,
end to end from the files: `fisa.metrics.panoptic.pq_compute` (hotcoco) against the
panopticapi-style reference run with N processes over image chunks, and
`fisa.metrics.semantic.evaluate_folders` against a per-class loop reference with N processes.
The references are the test-only implementations in tests/reference_metrics.py (run from a
source checkout). Prints the figures and the largest difference between the two results.

    python -m fisa.bench.metrics [--images 500] [--height 480] [--width 640] [--processes 2]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fisa.metrics.panoptic import pq_compute
from fisa.metrics.semantic import evaluate_folders
from fisa.metrics.synthetic import random_semantic_pair, write_panoptic_case

REFERENCE = Path(__file__).resolve().parents[2] / "tests" / "reference_metrics.py"


def load_reference():
    """The test-only reference implementations (tests/reference_metrics.py) as a module."""
    if not REFERENCE.is_file():
        raise SystemExit(f"the reference implementations are not at {REFERENCE}: run from a source checkout")
    spec = importlib.util.spec_from_file_location("reference_metrics", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["reference_metrics"] = module  # multiprocessing pickles its functions by module name
    spec.loader.exec_module(module)
    return module


def write_semantic_case(root: Path, num_images: int, height: int, width: int, num_classes: int, seed: int):
    """8-bit PNG label maps gt/ and pred/ with the same names; returns [(pred_path, gt_path)]."""
    rng = np.random.default_rng(seed)
    (root / "gt").mkdir(parents=True, exist_ok=True)
    (root / "pred").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(num_images):
        pred, gt = random_semantic_pair(rng, num_classes, 255, height, width, noise=0.02)
        gt_path, pred_path = root / "gt" / f"{i:06d}.png", root / "pred" / f"{i:06d}.png"
        Image.fromarray(gt.astype(np.uint8)).save(gt_path)
        Image.fromarray(pred.astype(np.uint8)).save(pred_path)
        paths.append((pred_path, gt_path))
    return paths


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print images/s; returns 0."""
    parser = argparse.ArgumentParser(prog="python -m fisa.bench.metrics", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--num-classes", type=int, default=150, help="semantic classes (ADE-150 by default)")
    parser.add_argument("--processes", type=int, default=2, help="processes of the reference implementations")
    parser.add_argument("--workdir", help="where to write the synthetic files (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    reference = load_reference()
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="fisa-bench-metrics-"))
    try:
        print(f"writing {args.images} synthetic {args.height}x{args.width} images under {workdir} ...", flush=True)
        case = write_panoptic_case(workdir / "panoptic", args.images, args.height, args.width, args.seed,
                                   num_categories=40)
        sem_paths = write_semantic_case(workdir / "semantic", args.images, args.height, args.width,
                                        args.num_classes, args.seed)
        files = (case["gt_json"], case["gt_dir"], case["pred_json"], case["pred_dir"])
        ours_pq, t_ours_pq = _timed(lambda: pq_compute(*files))
        ref_pq, t_ref_pq = _timed(lambda: reference.pq_compute_reference(*files, processes=args.processes))
        pq_diff = max(abs(ours_pq[g][k] - ref_pq[g][k]) for g in ("All", "Things", "Stuff") for k in ("pq", "sq", "rq"))
        ours_sem, t_ours_sem = _timed(lambda: evaluate_folders(workdir / "semantic" / "gt", workdir / "semantic" / "pred",
                                                               args.num_classes, 255))
        ref_sem, t_ref_sem = _timed(lambda: reference.miou_reference(sem_paths, args.num_classes, 255,
                                                                     processes=args.processes))
        sem_diff = max(abs(ours_sem[k] - ref_sem[k]) for k in ("mIoU", "fwIoU", "mACC", "pACC"))
        n = args.images
        rows = [
            ("PQ  fisa (hotcoco)", t_ours_pq, f"{ref_pq['All']['pq']:.6f} PQ, max |diff| {pq_diff:.1e}"),
            (f"PQ  reference ({args.processes} proc)", t_ref_pq, ""),
            ("mIoU fisa (bincount)", t_ours_sem, f"{ours_sem['mIoU']:.4f} mIoU, max |diff| {sem_diff:.1e}"),
            (f"mIoU reference ({args.processes} proc)", t_ref_sem, ""),
        ]
        print(f"{'':28s} {'seconds':>8s} {'images/s':>9s}")
        for name, seconds, note in rows:
            print(f"{name:28s} {seconds:8.2f} {n / seconds:9.1f}  {note}")
        print(json.dumps({"images": n, "height": args.height, "width": args.width,
                          "pq_speedup": t_ref_pq / t_ours_pq, "miou_speedup": t_ref_sem / t_ours_sem}))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
