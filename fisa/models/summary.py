"""Parameter summary of a variant, built with random weights (no download).

    python -m fisa.models.summary --clip ViT-L-14-336 --variant fisa --json
    python -m fisa.models.summary --clip ViT-L-14-336 --variant lora --lora-rank 64 --json

Prints total_parameters, trainable_parameters and trainable_by_group. The mask generator is a tiny
random-init config (`--generator`), so only `mask_generator` / totals of the generator depend on it.
SEVE's design (`model.seve`) and the Eq. 5 rule come from config.yaml's `--preset` defaults (paper by
default); `--seve-layers`, `--seve-shared/--no-seve-shared`, `--seve-qk-dim` and
`--no-seve-residual` override them. The earlier last-half, per-block, full-width design:

    python -m fisa.models.summary --clip ViT-L-14-336 --variant fisa --seve-layers last_half \
        --no-seve-shared --seve-qk-dim full --json
"""
from __future__ import annotations

import argparse
import json
import sys

from fisa.models.build import build_model, preset_model_config
from fisa.models.parameters import total_parameters, trainable_by_group, trainable_parameters
from fisa.models.seve import LAYER_NAMES
from fisa.models.variants import VARIANTS


def preset_model_defaults(preset: str = "paper") -> dict:
    """The `model` defaults of a preset in config.yaml (SEVE design, patch-mask rule, ...)."""
    from fisa.config import load_config

    presets = load_config()["presets"]
    if preset not in presets:
        raise ValueError(f"--preset: unknown {preset!r}; config.yaml has {sorted(presets)}")
    return presets[preset]["defaults"]["model"]


def summary_config(clip: str, lora_rank: int | None = None, adapter_layers: int = 2, seve: dict | None = None,
                   generator: str = "fisa-tiny-m2f-swin", num_proposals: int = 16, preset: str = "paper") -> dict:
    """The preset's complete model section (`preset_model_config`) with random-weight CLIP `clip`, a
    tiny harness generator and the keys of `seve` overridden; the text side (templates, synonyms,
    void) has no effect on parameter counts."""
    defaults = preset_model_defaults(preset)
    return preset_model_config(preset, backbone=clip, generator=generator, num_proposals=num_proposals,
                               adapter_layers=adapter_layers, lora_rank=lora_rank,
                               seve={**defaults["seve"], **(seve or {})}, prompt_templates="single",
                               clip={"model": clip, "pretrained": None, "image_size": None},
                               generator_config={"source": "harness", "config": generator},
                               synonyms="average", void="learned")


def summarize(model_cfg: dict, variant: str) -> dict:
    """{clip, variant, total_parameters, trainable_parameters, trainable_by_group} of a built model."""
    model = build_model(model_cfg, variant)
    return {"clip": model_cfg["clip"]["model"], "variant": variant, "lora_rank": model_cfg["lora_rank"],
            "adapter_layers": model_cfg["adapter_layers"], "seve": model_cfg["seve"],
            "total_parameters": total_parameters(model), "trainable_parameters": trainable_parameters(model),
            "trainable_by_group": trainable_by_group(model)}


def _seve_layers(text: str):
    if text in LAYER_NAMES:
        return text
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seve-layers: one of {list(LAYER_NAMES)} or comma-separated ints, "
                                         f"got {text!r}")


def _qk_dim(text: str):
    if text == "full":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seve-qk-dim: a positive int or 'full', got {text!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", required=True, help="open_clip model name, e.g. ViT-L-14-336 or fisa-tiny-vit-l")
    ap.add_argument("--variant", required=True, choices=VARIANTS)
    ap.add_argument("--lora-rank", type=int, default=None)
    ap.add_argument("--adapter-layers", type=int, default=2)
    ap.add_argument("--preset", default="paper", help="config.yaml preset whose model defaults are used")
    ap.add_argument("--seve-layers", type=_seve_layers, default=None, help="override model.seve.layers")
    ap.add_argument("--seve-shared", action=argparse.BooleanOptionalAction, default=None,
                    help="override model.seve.shared")
    ap.add_argument("--seve-qk-dim", type=_qk_dim, default=False, help="override model.seve.qk_dim ('full' = null)")
    ap.add_argument("--no-seve-residual", action="store_true")
    ap.add_argument("--generator", default="fisa-tiny-m2f-swin", help="tiny Mask2Former config (random init)")
    ap.add_argument("--json", action="store_true", help="print JSON (default: a readable table)")
    args = ap.parse_args(argv)
    if args.variant == "lora" and args.lora_rank is None:
        ap.error("--variant lora needs --lora-rank")
    seve = {}
    if args.seve_layers is not None:
        seve["layers"] = args.seve_layers
    if args.seve_shared is not None:
        seve["shared"] = args.seve_shared
    if args.seve_qk_dim is not False:
        seve["qk_dim"] = args.seve_qk_dim
    if args.no_seve_residual:
        seve["residual"] = False
    try:
        cfg = summary_config(args.clip, args.lora_rank, args.adapter_layers, seve, args.generator, preset=args.preset)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
