"""Parameter summary of a variant, built with random weights (no download).

    python -m fisa.models.summary --clip ViT-L-14-336 --variant fisa --json
    python -m fisa.models.summary --clip ViT-L-14-336 --variant lora --lora-rank 64 --json

Prints total_parameters, trainable_parameters and trainable_by_group. The mask generator is a tiny
random-init config (`--generator`), so only `mask_generator` / totals of the generator depend on it.
"""
from __future__ import annotations

import argparse
import json
import sys

from fisa.models.build import build_model
from fisa.models.parameters import total_parameters, trainable_by_group, trainable_parameters
from fisa.models.variants import VARIANTS


def summary_config(clip: str, lora_rank: int | None = None, adapter_layers: int = 2,
                   seve_layers="last_half", seve_residual: bool = True, generator: str = "fisa-tiny-m2f-swin",
                   num_proposals: int = 16) -> dict:
    """A model config with random-weight CLIP `clip` and a tiny harness generator."""
    return {"backbone": clip, "generator": generator, "num_proposals": num_proposals,
            "adapter_layers": adapter_layers, "lora_rank": lora_rank,
            "seve": {"layers": seve_layers, "residual": seve_residual}, "prompt_templates": "single",
            "clip": {"model": clip, "pretrained": None, "image_size": None},
            "generator_config": {"source": "harness", "config": generator},
            "synonyms": "average", "void": "learned"}  # text side: no effect on parameter counts


def summarize(model_cfg: dict, variant: str) -> dict:
    """{clip, variant, total_parameters, trainable_parameters, trainable_by_group} of a built model."""
    model = build_model(model_cfg, variant)
    return {"clip": model_cfg["clip"]["model"], "variant": variant, "lora_rank": model_cfg.get("lora_rank"),
            "adapter_layers": model_cfg.get("adapter_layers"), "seve": model_cfg.get("seve"),
            "total_parameters": total_parameters(model), "trainable_parameters": trainable_parameters(model),
            "trainable_by_group": trainable_by_group(model)}


def _seve_layers(text: str):
    if text in ("last_half", "all", "none"):
        return text
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seve-layers: 'last_half', 'all', 'none' or comma-separated ints, got {text!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", required=True, help="open_clip model name, e.g. ViT-L-14-336 or fisa-tiny-vit-l")
    ap.add_argument("--variant", required=True, choices=VARIANTS)
    ap.add_argument("--lora-rank", type=int, default=None)
    ap.add_argument("--adapter-layers", type=int, default=2)
    ap.add_argument("--seve-layers", type=_seve_layers, default="last_half")
    ap.add_argument("--no-seve-residual", action="store_true")
    ap.add_argument("--generator", default="fisa-tiny-m2f-swin", help="tiny Mask2Former config (random init)")
    ap.add_argument("--json", action="store_true", help="print JSON (default: a readable table)")
    args = ap.parse_args(argv)
    if args.variant == "lora" and args.lora_rank is None:
        ap.error("--variant lora needs --lora-rank")
    cfg = summary_config(args.clip, args.lora_rank, args.adapter_layers, args.seve_layers,
                         not args.no_seve_residual, args.generator)
    try:
        result = summarize(cfg, args.variant)
    except (ValueError, NotImplementedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['clip']} / {result['variant']}: {result['trainable_parameters']:,} trainable of "
              f"{result['total_parameters']:,}")
        for group, n in result["trainable_by_group"].items():
            print(f"  {group:22s} {n:>14,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
