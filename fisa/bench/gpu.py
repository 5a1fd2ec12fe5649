"""`python -m fisa.bench.gpu`: the one-command GPU check (issue 4), random weights, no downloads.

On a GPU, at the paper's settings: CLIP ViT-L-14-336 at 896 px, a Swin-B-sized
Mask2Former (100 queries, 133 classes), the ADE-150 vocabulary size, images resized to
shorter side 800 (longer <= 1333). Measures, for FISA and for the frozen baseline:
inference FPS (median after warm-up, model + post-processing) and peak memory; and for
FISA training iterations/s and peak memory at batch 2. Prints one JSON with the device name,
then (stderr) a table beside the paper's Table 2 (FISA: 2.63 FPS, 10.2 GB, 26M trainable).

Precision (fisa.engine.precision): `--precision` for inference (default bf16) and
`--train-precision` for training (default: the paper preset's `train.precision`); a device
that cannot run one fails naming the flag, and every measurement states the one it used.

Without a GPU it runs the same code on CPU at a reduced size (the small preset's tiny
models, 64 px), says so in the JSON (`"reduced": true`) and compares nothing with Table 2;
`--require-gpu` makes a missing GPU an error instead.

    python -m fisa.bench.gpu [--images 20] [--warmup 3] [--train-iters 10] [--reduced] [--require-gpu]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from fisa.engine.precision import precision_context
from fisa.engine.provenance import device_name, library_versions

PAPER = {"FPS": 2.63, "memory_GB": 10.2, "trainable_params_M": 26}


class NoGPUError(RuntimeError):
    """`--require-gpu` on a machine where torch sees no CUDA device."""


def compare_with_table2(record: dict) -> list[dict]:
    """Rows {measure, measured, paper, ratio} of FISA's figures beside the paper's Table 2.

    A reduced run (tiny models, no GPU) is not comparable: its rows carry `measured` but
    `ratio` None and a `note` saying why. Ratio = measured / paper."""
    fisa = record["fisa"]
    measured = {"FPS": fisa["inference"]["FPS"], "memory_GB": fisa["inference"]["memory_GB"],
                "trainable_params_M": fisa["trainable_params"] / 1e6}
    rows = []
    for measure, paper in PAPER.items():
        row = {"measure": measure, "measured": measured[measure], "paper": paper,
               "precision": fisa["inference"]["precision"] if measure != "trainable_params_M" else None,
               "ratio": None if record["reduced"] else measured[measure] / paper}
        if record["reduced"]:
            row["note"] = "reduced size (no GPU): not comparable"
        rows.append(row)
    return rows


def format_comparison(record: dict) -> str:
    """The comparison as a markdown table headed by the device (what the CLI prints to stderr)."""
    head = f"FISA vs the paper's Table 2 on {record['device']}" + (" (REDUCED: not comparable)"
                                                                    if record["reduced"] else "")
    lines = [head, "", "| measure | measured | paper (Table 2) | ratio | precision |", "|---|---|---|---|---|"]
    for r in compare_with_table2(record):
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"| {r['measure']} | {r['measured']:.3g} | {r['paper']:g} | {ratio} | {r['precision'] or '-'} |")
    train = record["fisa"].get("training")
    if train:
        lines.append(f"\ntraining: {train['iterations_per_s']:.3g} it/s, {train['memory_GB']:.3g} GB peak, "
                     f"batch {train['batch_per_gpu']} at {train['crop']} px, {train['precision']}")
    return "\n".join(lines)


def swin_b_mask2former_config(num_labels: int = 133):
    """Mask2Former Swin-B COCO-panoptic architecture (facebook/mask2former-swin-base-coco-panoptic's
    sizes, written out so no download is needed)."""
    from transformers import Mask2FormerConfig, SwinConfig

    backbone = SwinConfig(image_size=384, embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32],
                          window_size=12, drop_path_rate=0.3, out_features=["stage1", "stage2", "stage3", "stage4"])
    return Mask2FormerConfig(backbone_config=backbone, num_queries=100, hidden_dim=256, decoder_layers=10,
                             num_labels=num_labels, id2label={i: f"c{i}" for i in range(num_labels)},
                             label2id={f"c{i}": i for i in range(num_labels)})


def build(variant: str, reduced: bool, device: torch.device):
    """A FisaModel of `variant` with random weights at paper size (or the small preset's size)."""
    from transformers import Mask2FormerForUniversalSegmentation

    from fisa.models.build import build_model
    from fisa.models.clip_backbone import create_clip
    from fisa.models.fisa_model import FisaModel
    from fisa.models.text import get_tokenizer

    from fisa.models.build import preset_model_config

    # the preset's complete model section (SEVE design, Eq. 5 rule, ...), text side as before
    common = {"backbone": "vit_l14_336", "generator": "swin_b", "adapter_layers": 2, "lora_rank": None,
              "prompt_templates": "fcclip", "synonyms": "average", "void": "learned"}
    if reduced:
        cfg = preset_model_config("small", **common, num_proposals=16,
                                  clip={"model": "fisa-tiny-vit-l", "pretrained": None, "image_size": 64},
                                  generator_config={"source": "harness", "config": "fisa-tiny-m2f-swin"})
        return build_model(cfg, variant, cache_dir=None).to(device)
    cfg = preset_model_config("paper", **common, num_proposals=100,
                              clip={"model": "ViT-L-14-336", "pretrained": None, "image_size": 896},
                              generator_config={"source": "hub", "id": "facebook/mask2former-swin-base-coco-panoptic"})
    clip = create_clip(cfg["clip"], cache_dir=None, init_seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        generator = Mask2FormerForUniversalSegmentation(swin_b_mask2former_config())
    torch.manual_seed(0)
    return FisaModel(clip, get_tokenizer(cfg["clip"]["model"]), generator, cfg, variant).to(device)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def bench_inference(model, device, reduced, images, warmup, num_classes=150, precision="bf16"):
    """Median-based FPS and peak memory of model + panoptic/semantic post-processing."""
    from fisa.engine.inference import predict, run_model

    min_size, max_size = (64, 96) if reduced else (800, 1333)
    h, w = (48, 64) if reduced else (512, 683)  # a typical ADE20K validation image
    g = torch.Generator().manual_seed(0)
    imgs = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for _ in range(max(images, 1))]
    names = [[f"class {i}"] for i in range(num_classes)]
    is_thing = [i % 2 == 0 for i in range(num_classes)]
    eval_cfg = {"object_mask_threshold": 0.0, "overlap_threshold": 0.8}
    model.eval()
    autocast = precision_context(precision, device, "--precision")  # refused, never silently fp32
    with torch.no_grad():
        vocab = model.encode_vocabulary(names)
    _reset_peak(device)
    seconds = []
    for i in range(warmup + images):
        t0 = time.perf_counter()
        with autocast:
            predict(run_model(model, imgs[i % len(imgs)], vocab, min_size, max_size), {"semantic", "panoptic"},
                    is_thing, eval_cfg)
        _sync(device)
        if i >= warmup:
            seconds.append(time.perf_counter() - t0)
    return {"FPS": 1 / statistics.median(seconds), "median_s": statistics.median(seconds),
            "memory_GB": _peak_gb(device), "images": images, "warmup": warmup,
            "resolution": [min_size, max_size], "input_hw": [h, w], "precision": precision}


def bench_training(model, device, reduced, iters, batch=2, precision="bf16"):
    """Iterations/s and peak memory of FISA training at `batch` per GPU in `precision`."""
    from fisa.engine.train import TrainingForward
    from fisa.models.parameters import param_groups

    crop = 64 if reduced else 1024
    num_classes = 133
    g = torch.Generator().manual_seed(0)
    segs = 4 if reduced else 12
    batch_items = []
    for _ in range(batch):
        labels = torch.randint(0, num_classes, (segs,), generator=g)
        masks = torch.zeros(segs, crop, crop, dtype=torch.bool)
        for k in range(segs):  # random rectangles
            y, x = torch.randint(0, crop // 2, (2,), generator=g).tolist()
            masks[k, y:y + crop // 3, x:x + crop // 3] = True
        batch_items.append({"image": torch.randint(0, 256, (3, crop, crop), generator=g, dtype=torch.uint8),
                            "labels": labels, "masks": masks})
    from fisa.config import load_config

    train_defaults = load_config()["presets"]["small" if reduced else "paper"]["defaults"]["train"]
    step = TrainingForward(model, [[f"class {i}"] for i in range(num_classes)],
                           train_defaults["loss_weights"], float(train_defaults["no_object_weight"]),
                           train_defaults["criterion"]).to(device)
    opt = torch.optim.AdamW(param_groups(model, 1e-4, 0.05, 0.1))
    from fisa.engine.loop import to_device

    batch_dev = to_device(batch_items, device)
    autocast = precision_context(precision, device, "--train-precision")
    step.train()
    _reset_peak(device)
    seconds = []
    for i in range(iters + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = step(batch_dev)["loss"]
        loss.backward()
        opt.step()
        _sync(device)
        if i:  # the first iteration allocates the optimizer state
            seconds.append(time.perf_counter() - t0)
    return {"iterations_per_s": 1 / statistics.median(seconds), "median_s": statistics.median(seconds),
            "memory_GB": _peak_gb(device), "batch_per_gpu": batch, "crop": crop, "iterations": iters,
            "precision": precision}


def check(argv=None) -> dict:
    """Run the check and print one JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--train-iters", type=int, default=10)
    ap.add_argument("--reduced", action="store_true", help="small sizes even on a GPU")
    ap.add_argument("--require-gpu", action="store_true", help="fail when torch sees no CUDA device")
    ap.add_argument("--precision", default="bf16", help="inference precision: fp32 | tf32 | bf16 (autocast)")
    ap.add_argument("--train-precision", default=None,
                    help="training precision (default: the paper preset's train.precision)")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    if args.require_gpu and not cuda:
        raise NoGPUError("--require-gpu: torch sees no CUDA device (torch.cuda.is_available() is False; "
                         f"torch {torch.__version__}, CUDA build {torch.version.cuda}); run without it for the "
                         "reduced CPU check")
    device = torch.device("cuda" if cuda else "cpu")
    reduced = args.reduced or not cuda
    if args.train_precision is None:
        from fisa.config import load_config

        args.train_precision = load_config()["presets"]["paper"]["defaults"]["train"]["precision"]
    if not cuda:
        print("no GPU: running on CPU at a REDUCED size (tiny models, 64 px); the numbers only show the "
              "path works", file=sys.stderr)
    t0 = time.perf_counter()
    record = {"device": device_name(device), "reduced": reduced, "paper_fisa": PAPER,
              "settings": "reduced: fisa-tiny-vit-l @64px, tiny Mask2Former, 16 proposals" if reduced else
              "ViT-L-14-336 @896px, Swin-B Mask2Former (100 queries), ADE-150 vocabulary, shorter side 800",
              "versions": library_versions()}
    for variant in ("fisa", "baseline"):
        model = build(variant, reduced, device)
        entry = {"trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                 "inference": bench_inference(model, device, reduced, args.images, args.warmup,
                                              precision=args.precision)}
        if variant == "fisa":
            entry["inference_fp32"] = bench_inference(model, device, reduced, max(args.images // 2, 2), 1,
                                                      precision="fp32") if cuda else None
            entry["training"] = bench_training(model, device, reduced, args.train_iters,
                                               precision=args.train_precision)
        record[variant] = entry
        del model
        if cuda:
            torch.cuda.empty_cache()
    record["wall_s"] = round(time.perf_counter() - t0, 1)
    record["table2"] = compare_with_table2(record)
    print(json.dumps(record, indent=2))
    print(format_comparison(record), file=sys.stderr)
    return record


def main(argv=None) -> int:
    """The command line: run the check (its record goes to stdout), exit 0."""
    check(argv)
    return 0


if __name__ == "__main__":
    from fisa.utils.errors import run_cli

    run_cli(main)
