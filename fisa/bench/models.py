"""Benchmark: FISA vs the MaskCLIP baseline, forward time and peak memory, side by side.

    python -m fisa.bench.models                      # ViT-B-16, 448px, 100 masks, 150 classes, CPU
    python -m fisa.bench.models --device cuda --repeats 20
    python -m fisa.bench.models --clip fisa-tiny-vit-l --image-size 64 --masks 16   # quick check

Both models get the same random-weight CLIP, the same precomputed proposals (the frozen
generator is identical for both and left out) and the same vocabulary. Each model is measured in
its own subprocess for peak memory, so one cannot pollute the other: on CUDA
`torch.cuda.max_memory_allocated`, on CPU the rise of the process's peak RSS during the timed
forward over its RSS before it.

Time: the two models run in one process, interleaved in pairs (the order alternates pair by pair),
and the figure is the distribution of the per-pair ratios FISA / baseline (median, quartiles,
min/max). On CPU the clock is the process's CPU time (`time.process_time`, user + sys of all its
threads), which a loaded machine inflates far less than wall time; wall time is printed beside
it. One thread by default: CPU time then counts no OpenMP spin-waiting. Hardware instruction
counts would be steadier still, but `perf stat -e instructions` is not supported on the machine
this was written on, and callgrind is ~50x too slow for ViT-B at 448 px. On CUDA the clock is
wall time after a synchronise (host CPU time means nothing there).
Target (issue 12): FISA <= 1.15x time and <= 1.2x memory.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import time


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def _setup(args: dict, variant: str):
    """(run, device): a closure running one no-grad forward of `variant` on fixed inputs."""
    import torch

    from fisa.models import build_model
    from fisa.models.summary import summary_config

    torch.manual_seed(0)
    cfg = summary_config(args["clip"], num_proposals=16)
    cfg["clip"]["image_size"] = args["image_size"]
    device = torch.device(args["device"])
    model = build_model(cfg, variant).to(device).eval()
    dim = model.clip.visual.output_dim
    g = torch.Generator().manual_seed(1)
    vocab = torch.nn.functional.normalize(torch.randn(args["classes"], dim, generator=g), dim=-1).to(device)
    s = args["image_size"]
    images = (torch.rand(1, 3, s, s, generator=g) * 255).to(device)
    proposals = (torch.randn(1, args["masks"], s // 4, s // 4, generator=g) * 4).to(device)

    def run():
        with torch.no_grad():
            out = model(images, vocab, proposals=proposals)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    return run, device


def _measure_memory(args: dict, variant: str, queue) -> None:
    """Peak memory of one variant (in its own process, so the other model cannot pollute it)."""
    import torch

    torch.set_num_threads(args["threads"])
    run, device = _setup(args, variant)
    run()  # warm-up: lazy allocations, oneDNN primitives
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_mb()
    run()
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        total = torch.cuda.max_memory_allocated() / 2**20
    else:
        total = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        peak = total - base
    queue.put({"variant": variant, "peak_activation_mb": peak, "peak_total_mb": total})


def ratio_spread(ratios: list[float]) -> dict:
    """{median, q1, q3, min, max, n} of per-pair ratios."""
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
    return {"median": statistics.median(ratios), "q1": q1, "q3": q3, "min": min(ratios), "max": max(ratios),
            "n": len(ratios)}


def time_side_by_side(args: dict) -> dict:
    """Forward times of baseline and FISA, interleaved pair by pair in one process (the order
    alternates), on two clocks: CPU time of the process and wall time.

    Returns {"baseline"/"fisa": {median_cpu_s, median_wall_s, min_wall_s},
    "paired_ratio": {"cpu"/"wall": ratio_spread}, "clock": the clock of the headline ratio}."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(args["threads"])
    try:
        runs = {v: _setup(args, v)[0] for v in ("baseline", "fisa")}
        for _ in range(args["warmup"]):
            for run in runs.values():
                run()
        cpu: dict[str, list[float]] = {v: [] for v in runs}
        wall: dict[str, list[float]] = {v: [] for v in runs}
        for i in range(args["repeats"]):
            for v in (("baseline", "fisa") if i % 2 == 0 else ("fisa", "baseline")):
                c, t = time.process_time(), time.perf_counter()
                runs[v]()
                wall[v].append(time.perf_counter() - t)
                cpu[v].append(time.process_time() - c)
    finally:
        torch.set_num_threads(threads)
    out = {v: {"median_cpu_s": statistics.median(cpu[v]), "median_wall_s": statistics.median(wall[v]),
               "min_wall_s": min(wall[v])} for v in runs}
    out["paired_ratio"] = {name: ratio_spread([f / b for f, b in zip(clock["fisa"], clock["baseline"])])
                           for name, clock in (("cpu", cpu), ("wall", wall))}
    out["clock"] = "wall" if args["device"].startswith("cuda") else "cpu"
    return out


def measure_memory(args: dict, variant: str) -> dict:
    """Peak memory of one variant, measured in a fresh subprocess."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_measure_memory, args=(args, variant, q))
    p.start()
    result = q.get()
    p.join()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", default="ViT-B-16")
    ap.add_argument("--image-size", type=int, default=448)
    ap.add_argument("--masks", type=int, default=100)
    ap.add_argument("--classes", type=int, default=150)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=10, help="timed pairs (baseline + FISA each)")
    ap.add_argument("--json", action="store_true")
    args = vars(ap.parse_args(argv))
    base = measure_memory(args, "baseline")
    fisa = measure_memory(args, "fisa")
    timing = time_side_by_side(args)
    base.update(timing["baseline"])
    fisa.update(timing["fisa"])
    clock = timing["clock"]
    ratios = {"time_ratio": timing["paired_ratio"][clock]["median"], "time_ratio_clock": clock,
              "time_ratio_spread": timing["paired_ratio"],
              "memory_ratio_total": fisa["peak_total_mb"] / base["peak_total_mb"],
              # forward-only peaks under ~1 MB are RSS noise: no ratio then
              "memory_ratio_activation": (fisa["peak_activation_mb"] / base["peak_activation_mb"]
                                          if base["peak_activation_mb"] > 1 else None)}
    report = {"setting": {k: args[k] for k in ("clip", "image_size", "masks", "classes", "device", "threads",
                                               "repeats")},
              "baseline": base, "fisa": fisa, **ratios,
              "targets": {"time_ratio": 1.15, "memory_ratio_total": 1.2}}
    if args["json"]:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args['clip']} @ {args['image_size']}px, {args['masks']} masks, {args['classes']} classes, "
              f"{args['device']} ({args['threads']} threads), {args['repeats']} interleaved pairs")
        for r in (base, fisa):
            print(f"  {r['variant']:9s} CPU {r['median_cpu_s'] * 1000:9.1f} ms   wall {r['median_wall_s'] * 1000:9.1f} ms"
                  f"   peak total {r['peak_total_mb']:9.1f} MB   forward {r['peak_activation_mb']:8.1f} MB")
        for name, sp in timing["paired_ratio"].items():
            mark = "  <- headline" if name == clock else ""
            print(f"  FISA / baseline time ({name:4s}): median {sp['median']:.3f}x, quartiles "
                  f"{sp['q1']:.3f}-{sp['q3']:.3f}, range {sp['min']:.3f}-{sp['max']:.3f} (n={sp['n']}){mark}")
        print(f"  target: time <= 1.15x; memory {ratios['memory_ratio_total']:.3f}x total (target <= 1.2), "
              f"forward-only "
              f"{'n/a' if ratios['memory_ratio_activation'] is None else format(ratios['memory_ratio_activation'], '.3f') + 'x'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
