"""`python -m fisa.bench.budget` (`snakemake budget`): what the preset's experiments will cost.

    python -m fisa.bench.budget --preset paper --shapes results/paper/budget/shapes/*.csv \
        --output results/paper/budget/budget.csv --markdown results/paper/budget/budget.md

From the shape rehearsal's FLOPs (`fisa.bench.rehearse --mode shapes`), one row per experiment:

- training FLOPs = iterations x (train.batch_size / batch per GPU) x FLOPs of one step at the batch
  per GPU; GPU-hours = training FLOPs / (budget.peak_bf16_flops x budget.utilisation) / 3600 on
  `budget.accelerator` (config keys of the preset, defaults documented in config.yaml);
- projected FPS = peak x utilisation / FLOPs of one test image (ADE-150 when evaluated, else the
  experiment's first dataset); no post-processing, no data loading, so an upper bound;
- training memory per GPU = fp32 weights (all parameters) + fp32 gradients and AdamW's two moments
  (trainable parameters) + half the fp32 activations the rehearsal measured (bf16 autocast keeps
  most saved activations in bf16; our approximation) without the [L, L] attention maps (CUDA's
  flash / memory-efficient SDPA kernels do not keep them; the meta run's math path does), against
  each of `budget.card_memory_gb`.

A total row sums `all_tables` (the rows given). FISA's figures are printed beside the paper's
Table 2 (FISA 45 GPU-h, 2.63 FPS, 10.2 GB inference memory; MAFT+ 224 GPU-h).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

PAPER_TABLE2 = {"FISA": {"gpu_hours": 45.0, "fps": 2.63, "memory_gb": 10.2, "iterations": 25000},
                "MAFT+": {"gpu_hours": 224.0, "fps": 2.94, "memory_gb": 13.7, "iterations": 60000}}
FISA_EXPERIMENT = "fisa_main"  # the paper's FISA: the main schedule (25k iterations, Table 2)
FPS_DATASET = "ade150"          # Table 2 measures on ADE20K
COLUMNS = ("experiment", "variant", "backbone", "generator", "iterations", "train_step_flops", "batch_per_gpu",
           "train_flops", "gpu_hours", "test_image_flops", "projected_fps", "train_memory_gb")


def budget_rows(shapes: list[dict], config: dict, preset: str) -> list[dict]:
    """One budget row per rehearsed experiment (status ok), plus a `total` row."""
    from fisa.config import resolve_experiment

    b = config["presets"][preset]["budget"]
    rate = float(b["peak_bf16_flops"]) * float(b["utilisation"])
    rows = []
    for s in shapes:
        if s["status"] != "ok":
            raise ValueError(f"shape rehearsal of {s['experiment']!r} failed ({s['status']}): no budget without it")
        r = resolve_experiment(config, s["experiment"], preset)
        iterations = int(r["train"]["iterations"])
        step = float(s["train_step_flops"] or 0)
        per_gpu = int(float(s["batch_per_gpu"] or 0))
        train_flops = iterations * int(r["train"]["batch_size"]) / per_gpu * step if per_gpu and step else 0.0
        by_ds = json.loads(s["test_flops_by_dataset"] or "{}")
        test = float(by_ds.get(FPS_DATASET, s["test_image_flops"] or 0))
        trainable, total = int(s["params_trainable"]), int(s["params_total"])
        activations = float(s["activation_bytes"] or 0) - float(s["attention_matrix_bytes"] or 0)
        memory = (total * 4 + trainable * 12 + activations / 2) / 1e9 if iterations else 0.0
        row = {"experiment": s["experiment"], "variant": s["variant"], "backbone": s["backbone"],
               "generator": s["generator"], "iterations": iterations, "train_step_flops": step,
               "batch_per_gpu": per_gpu, "train_flops": train_flops, "gpu_hours": train_flops / rate / 3600,
               "test_image_flops": test, "projected_fps": rate / test if test else 0.0, "train_memory_gb": memory}
        for card in b["card_memory_gb"]:
            row[f"fits_{card:g}gb"] = "" if not iterations else ("yes" if memory <= card else "no")
        rows.append(row)
    total = {"experiment": "total", "iterations": sum(r["iterations"] for r in rows),
             "train_flops": sum(r["train_flops"] for r in rows), "gpu_hours": sum(r["gpu_hours"] for r in rows)}
    return rows + [total]


def comparison(rows: list[dict]) -> list[dict]:
    """FISA's projection beside the paper's Table 2 (FISA, MAFT+)."""
    fisa = next((r for r in rows if r["experiment"] == FISA_EXPERIMENT), None)
    out = []
    if fisa:
        out.append({"method": f"FISA projected ({FISA_EXPERIMENT})", "gpu_hours": fisa["gpu_hours"],
                    "fps": fisa["projected_fps"], "iterations": fisa["iterations"],
                    "train_memory_gb": fisa["train_memory_gb"]})
    for name, v in PAPER_TABLE2.items():
        out.append({"method": f"{name} (paper, Table 2)", "gpu_hours": v["gpu_hours"], "fps": v["fps"],
                    "iterations": v["iterations"], "inference_memory_gb": v["memory_gb"]})
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.3e}" if abs(v) >= 1e6 else f"{v:.0f}"
    return "" if v is None else str(v)


def markdown(rows: list[dict], config: dict, preset: str) -> str:
    """The budget and the Table 2 comparison as Markdown."""
    b = config["presets"][preset]["budget"]
    cols = list(COLUMNS) + [f"fits_{c:g}gb" for c in b["card_memory_gb"]]
    lines = [f"Compute budget, preset `{preset}`: {b['accelerator']}, peak bf16 {b['peak_bf16_flops']:.3g} FLOP/s "
             f"x utilisation {b['utilisation']} (config: presets.{preset}.budget)", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    cmp = comparison(rows)
    ccols = ["method", "gpu_hours", "fps", "iterations", "train_memory_gb", "inference_memory_gb"]
    lines += ["", "| " + " | ".join(ccols) + " |", "|" + "---|" * len(ccols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in ccols) + " |" for r in cmp]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None)
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--shapes", required=True, nargs="+",
                    help="CSVs of python -m fisa.bench.rehearse --mode shapes (rows concatenated)")
    ap.add_argument("--output", required=True, help="budget CSV")
    ap.add_argument("--markdown", default=None, help="also write the Markdown table here")
    args = ap.parse_args(argv)
    from fisa.config import load_config
    from fisa.utils.io import atomic_write_text

    config = load_config(args.config)
    shapes = []
    for path in args.shapes:
        try:
            with open(path, newline="") as fh:
                shapes += list(csv.DictReader(fh))
        except OSError as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            return 1
    try:
        rows = budget_rows(shapes, config, args.preset)
    except (ValueError, KeyError) as e:
        print(f"error: {' '.join(args.shapes)}: {e}", file=sys.stderr)
        return 1
    cols = list(COLUMNS) + [f"fits_{c:g}gb" for c in config["presets"][args.preset]["budget"]["card_memory_gb"]]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(args.output, buf.getvalue())
    text = markdown(rows, config, args.preset)
    if args.markdown:
        atomic_write_text(args.markdown, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
