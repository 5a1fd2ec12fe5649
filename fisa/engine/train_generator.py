"""`python -m fisa.engine.train_generator`: train a Mask2Former mask generator on COCO-panoptic.

    python -m fisa.engine.train_generator --config config.yaml --preset small \
        --generator swin_b --output-dir resources/small/checkpoints/generators/swin_b

Gives the small preset its "COCO pre-trained" generators (tiny Mask2Formers trained for a
minute on the synthetic COCO stand-in) and, at paper scale, Fig. 2b's generator re-trained
from scratch (`swin_b_retrained`, `base: swin_b`: the architecture of swin_b, new weights).
The model is transformers' `Mask2FormerForUniversalSegmentation`, which computes
Mask2Former's own loss (Hungarian matching, class CE + mask BCE + dice, point sampling,
auxiliary losses) from `mask_labels` / `class_labels`.

Schedule: `presets.<P>.generators.<NAME>.train` ({iterations, batch_size, lr, ...}; keys
not given come from the preset's `defaults.train`). The same training loop as FISA
(`fisa.engine.loop`): resumable, DDP, checkpoints in `<output-dir>/training/`. The
result is written with `save_pretrained` (config.json + weights), then `done.json`.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fisa.config import ConfigError, deep_merge, load_config, preset_name
from fisa.engine import provenance
from fisa.engine.common import add_common_args, overrides_from, setup_logging, split_batch
from fisa.engine.distributed import barrier, cleanup_distributed, init_distributed
from fisa.engine.loop import LoopConfig, poly_lr_lambda, train_loop, unwrap
from fisa.utils.io import atomic_write_json

log = logging.getLogger("fisa.train_generator")


def generator_recipe(config: dict, preset: str, name: str) -> tuple[dict, dict]:
    """(architecture entry, training schedule) of generator `name` in `preset`.

    A `base: OTHER` entry takes OTHER's architecture. The schedule is the preset's
    `defaults.train` overlaid by the generator's own `train` section.
    """
    gens = config["presets"][preset].get("generators", {})
    if name not in gens:
        raise ConfigError(f"--generator {name!r}: not in presets.{preset}.generators ({sorted(gens)})")
    entry = dict(gens[name])
    arch = entry
    if entry.get("base"):
        if entry["base"] not in gens:
            raise ConfigError(f"presets.{preset}.generators.{name}.base: {entry['base']!r} is not a generator")
        arch = {k: v for k, v in gens[entry["base"]].items() if k != "train"}
    if "train" not in entry:
        raise ConfigError(f"presets.{preset}.generators.{name}.train: no training schedule "
                          "({iterations, batch_size, lr}) for this generator")
    schedule = deep_merge(config["presets"][preset].get("defaults", {}).get("train", {}), entry["train"])
    return arch, schedule


def generator_step_fn():
    """step_fn: transformers' Mask2Former loss on one micro-batch (targets padded like the images)."""
    from fisa.models.generator import normalize_for_generator

    def step(model, batch):
        images, targets = split_batch(batch)
        pixels = normalize_for_generator(images)  # [B,3,Hp,Wp], zero-padded to /32
        hp, wp = pixels.shape[-2:]
        mask_labels, class_labels = [], []
        for t in targets:
            keep = ~t["iscrowd"].bool() if "iscrowd" in t else torch.ones_like(t["labels"], dtype=torch.bool)
            m = t["masks"][keep].float()
            mask_labels.append(F.pad(m, (0, wp - m.shape[-1], 0, hp - m.shape[-2])))
            class_labels.append(t["labels"][keep].long())
        out = model(pixel_values=pixels, mask_labels=mask_labels, class_labels=class_labels)
        return {"loss": out.loss}
    return step


def _param_groups(model, lr, wd, backbone_mult):
    """Mask2Former's recipe: 0.1x lr for the backbone, no weight decay on norms / embeddings."""
    groups = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = backbone_mult if ".pixel_level_module.encoder." in f".{n}" else 1.0
        decay = 0.0 if (p.ndim == 1 or "norm" in n or "embed" in n) else wd
        groups.setdefault((scale, decay), []).append(p)
    return [{"params": ps, "lr": lr * s, "weight_decay": d} for (s, d), ps in groups.items()]


def train_generator(config: dict, preset: str, name: str, output_dir: str | Path, seed: int = 0,
                    micro_batch: int | None = None) -> Path:
    """Train generator `name` of `preset` into `output_dir`; returns the `done.json` path."""
    from fisa.data.datasets import build_dataset
    from fisa.data.transforms import collate, train_transform
    from fisa.models.generator import build_generator_architecture

    out = Path(output_dir)
    p = config["presets"][preset]
    ctx = init_distributed(p.get("device", "cpu"))
    arch, t = generator_recipe(config, preset, name)
    t0 = time.perf_counter()
    model = build_generator_architecture(arch, cache_dir=p.get("cache_dir"), init_seed=seed).to(ctx.device)
    dataset = build_dataset(t.get("dataset", "coco"), "train", p["data_root"])
    iterations = int(t["iterations"])
    micro = int(micro_batch or t.get("micro_batch_size") or t["batch_size"] // ctx.world_size)
    cfg = LoopConfig(iterations=iterations, global_batch=int(t["batch_size"]), micro_batch=micro, seed=seed,
                     checkpoint_every=int(t.get("checkpoint_every", 1000)), log_every=int(t.get("log_every", 20)),
                     precision=t.get("precision", "fp32"), num_workers=int(t.get("num_workers", 0)),
                     grad_clip=t.get("grad_clip"))
    lr = float(t["lr"])
    optimizer = torch.optim.AdamW(_param_groups(model, lr, float(t.get("weight_decay", 0.05)),
                                                float(t.get("backbone_lr_multiplier", 0.1))), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lr_lambda(iterations))
    result = train_loop(model, dataset, generator_step_fn(), optimizer, scheduler, cfg, out / "training", ctx,
                        transform=train_transform(int(t["crop_size"]), tuple(t["scale_range"])), collate_fn=collate)
    if ctx.is_main:
        unwrap(model).save_pretrained(str(out))
        prov = provenance.collect(ctx.device, ctx.world_size)
        wall = time.perf_counter() - t0
        prov.update(generator=name, preset=preset, architecture=arch, schedule=t, iterations=iterations,
                    resumed_from=result.resumed_from, wall_seconds=round(wall, 3),
                    gpu_hours=round(wall * ctx.world_size / 3600, 6), final_loss=result.last_terms.get("loss"))
        atomic_write_json(out / "provenance.json", prov)
        atomic_write_json(out / "done.json", {"generator": name, "preset": preset, "iterations": iterations,
                                              "finished": provenance.now()})
    barrier(ctx)
    cleanup_distributed()
    return out / "done.json"


def main(argv=None) -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap, experiment=False)
    ap.add_argument("--generator", required=True, help="logical generator name (presets.<P>.generators)")
    ap.add_argument("--output-dir", required=True, help="<cache_dir>/generators/<NAME>")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--micro-batch", type=int, default=None)
    args = ap.parse_args(argv)
    setup_logging()
    config = load_config(args.config, overrides_from(args.set))
    train_generator(config, preset_name(config, args.preset), args.generator, args.output_dir, args.seed,
                    args.micro_batch)


if __name__ == "__main__":
    from fisa.utils.errors import run_cli

    run_cli(main)  # one `error: <file>: <what> — <fix>` line for a user-fixable error
