"""Checkpoints in the layouts the real sources serve, with placeholder weights, for offline loading.

The paper preset loads four kinds of files; this module writes each, with the real key names
and shapes, where the real code path looks for it, so that the fetch rules
(`fisa.engine.fetch`) and the model factory (`create_clip`, `load_generator`) can be run offline:

- open_clip tags (`ViT-L-14-336`/`ViT-B-16` `openai`, `EVA01-g-14-plus` `merged2b_s11b_b114k`):
  open_clip 3.3 resolves a tag to its `hf_hub` repo (`timm/vit_large_patch14_clip_336.openai`,
  `timm/eva_giant_patch14_plus_clip_224.merged2b_s11b_b114k`, ...) and tries
  `open_clip_model.safetensors`, then `open_clip_pytorch_model.bin` (open_clip/pretrained.py,
  `download_pretrained_from_hf`); the file holds open_clip's own state dict. We write the `.bin`
  into huggingface_hub's cache layout (`models--<org>--<name>/snapshots/<commit>/`, `refs/main`)
  under `<cache_dir>/open_clip`, keys and shapes from open_clip's model built on the meta device.
- hub Mask2Formers (`facebook/mask2former-swin-{base,tiny}-coco-panoptic`): `config.json` +
  `pytorch_model.bin` in the HF cache under `<cache_dir>/huggingface` (what `from_pretrained`
  reads); the config is the project's stored architecture (`generator_architecture`).
- the detectron2 R50 `.pkl`: `{"model": {d2 name: numpy array}, "__author__": ...}` (detectron2's
  model-zoo pickle), written by the caller with detectron2's names.

Placeholder weights: each tensor is one distinct constant, saved as `torch.full((1,), v).expand(shape)`.
`torch.save` keeps an expanded tensor's 1-element storage and its stride-0 view, so a 1.4 B
parameter EVA01-g file is a few hundred kB (safetensors would refuse it: it stores dense,
non-overlapping tensors only; hence the `.bin` alternative, which open_clip falls back to).

    python -m fisa.bench.formats --preset paper --cache-dir /tmp/fmt [--load]

writes every backbone and hub generator of the preset and, with `--load`, loads each at full
size through `create_clip` / `load_generator` (EVA01-g-14-plus: ~1.4 B parameters, several
minutes and ~6 GB of CPU memory: the benchmark behind the CI test, which loads on `meta`).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

HF_COMMIT = "0" * 40  # the snapshot our cache entries claim; refs/main points at it


def placeholder_value(index: int) -> float:
    """The constant of the `index`-th tensor: distinct, exactly representable, never 0 or 1."""
    return 0.5 + index / 1024


def placeholder_state_dict(shapes: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> dict[str, torch.Tensor]:
    """{name: (shape, dtype)} -> {name: constant tensor with a 1-element storage}."""
    out = {}
    for i, (name, (shape, dtype)) in enumerate(shapes.items()):
        value = placeholder_value(i) if dtype.is_floating_point else i % 7
        out[name] = torch.full((1,), value, dtype=dtype).expand(shape) if len(shape) else torch.tensor(value, dtype=dtype)
    return out


def hf_cache_file(root: str | Path, repo_id: str, filename: str, commit: str = HF_COMMIT) -> Path:
    """Where huggingface_hub's cache under `root` keeps `filename` of `repo_id` at `commit`."""
    repo = Path(root) / f"models--{repo_id.replace('/', '--')}"
    (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit / filename


def open_clip_shapes(model_name: str, quick_gelu: bool) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Key names and shapes of open_clip's `model_name` (built on meta: no memory, no compute)."""
    import open_clip

    model = open_clip.create_model(model_name, force_quick_gelu=quick_gelu, device="meta")
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


def write_open_clip_tag(entry: dict, cache_dir: str | Path) -> Path:
    """Write placeholder weights of backbone `entry` {model, pretrained} where open_clip resolves its tag."""
    import open_clip

    from fisa.models.clip_backbone import uses_quick_gelu

    cfg = open_clip.get_pretrained_cfg(entry["model"], entry["pretrained"])
    if not cfg.get("hf_hub"):
        raise ValueError(f"{entry['model']} {entry['pretrained']}: open_clip serves this tag from a URL, not the hub")
    repo_id, filename = os.path.split(cfg["hf_hub"])
    path = hf_cache_file(Path(cache_dir) / "open_clip", repo_id, filename or "open_clip_pytorch_model.bin")
    state = placeholder_state_dict(open_clip_shapes(entry["model"], uses_quick_gelu(entry["model"], entry["pretrained"])))
    torch.save(state, path)
    return path


def write_hub_generator(entry: dict, cache_dir: str | Path) -> Path:
    """Write the stored architecture as config.json and placeholder weights of hub generator `entry` {id}."""
    from transformers import Mask2FormerForUniversalSegmentation

    from fisa.models.generator import generator_architecture

    config = generator_architecture(entry)
    config_path = hf_cache_file(Path(cache_dir) / "huggingface", entry["id"], "config.json")
    config.to_json_file(str(config_path))
    with torch.device("meta"):
        model = Mask2FormerForUniversalSegmentation(config)
    state = placeholder_state_dict({k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()})
    torch.save(state, config_path.parent / "pytorch_model.bin")
    return config_path.parent


def main(argv: list[str] | None = None) -> int:
    """Write (and with --load, load at full size) every open_clip backbone and hub generator of a preset."""
    from fisa.config import load_config
    from fisa.models.clip_backbone import create_clip
    from fisa.models.generator import load_generator

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--load", action="store_true", help="load each at full size (the real calls) and time it")
    args = ap.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    preset = load_config()["presets"][args.preset]
    report = {}
    for name, entry in preset["backbones"].items():
        if entry.get("source", "open_clip") != "open_clip" or not entry.get("pretrained"):
            continue
        t0 = time.perf_counter()
        path = write_open_clip_tag(entry, args.cache_dir)
        report[f"backbone {name}"] = {"file": str(path), "bytes": path.stat().st_size,
                                      "write_s": round(time.perf_counter() - t0, 1)}
        if args.load:
            t0 = time.perf_counter()
            create_clip(entry, cache_dir=args.cache_dir, backbone=name)
            report[f"backbone {name}"]["load_s"] = round(time.perf_counter() - t0, 1)
    for name, entry in preset["generators"].items():
        if entry.get("source") != "hub":
            continue
        t0 = time.perf_counter()
        folder = write_hub_generator(entry, args.cache_dir)
        report[f"generator {name}"] = {"folder": str(folder), "write_s": round(time.perf_counter() - t0, 1)}
        if args.load:
            t0 = time.perf_counter()
            load_generator(name, entry, cache_dir=args.cache_dir)
            report[f"generator {name}"]["load_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    from fisa.utils.errors import run_cli

    run_cli(main)
