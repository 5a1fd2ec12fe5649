"""`python -m fisa.engine.train_generator`: train a Mask2Former mask generator on COCO-panoptic.

    python -m fisa.engine.train_generator --run-config results/small/configs/generators/swin_b.yaml

The run config (`fisa.config.generator_run_config`, written by the workflow's
`generator_run_config` rule) is the only input; the generator goes to its
`checkpoints.output_dir` (`<cache_dir>/generators/<NAME>/`), which also gets a copy of it
(`run_config.yaml`).

Gives the small preset its "COCO pre-trained" generators (tiny Mask2Formers trained for a
minute on the synthetic COCO stand-in) and, at paper scale, Fig. 2b's generator re-trained
from scratch (`swin_b_retrained`, `base: swin_b`: the architecture of swin_b, new weights).
The model is transformers' `Mask2FormerForUniversalSegmentation`, which computes
Mask2Former's own loss (Hungarian matching, class CE + mask BCE + dice, point sampling,
auxiliary losses) from `mask_labels` / `class_labels`.

Schedule: the run config's `train` = `presets.<P>.generators.<NAME>.train` ({iterations,
batch_size, lr, ...}) over the preset's `defaults.train`. The same training loop as FISA
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

from fisa.config import load_run_config, write_run_config
from fisa.engine import provenance
from fisa.engine.cli import add_run_config_arg, run_main, setup_logging
from fisa.engine.distributed import barrier, cleanup_distributed, init_distributed
from fisa.engine.loop import LoopConfig, lr_lambda, train_loop, unwrap
from fisa.engine.run_model import RUN_CONFIG, split_batch
from fisa.utils.io import atomic_write_json

log = logging.getLogger("fisa.train_generator")


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


def train_generator(run: dict, output_dir: str | Path | None = None, micro_batch: int | None = None) -> Path:
    """Train the generator of `run` (`fisa.config.generator_run_config`) into `output_dir`
    (default: its `checkpoints.output_dir`); returns the `done.json` path."""
    from fisa.data.datasets import build_dataset
    from fisa.data.transforms import collate, train_transform
    from fisa.models.generator import build_generator_architecture

    out = Path(output_dir if output_dir is not None else run["checkpoints"]["output_dir"])
    name, preset, seed, arch, t = run["generator"], run["preset"], int(run["seed"]), run["architecture"], run["train"]
    ctx = init_distributed(run["device"])
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_run_config(out / RUN_CONFIG, run)
    t0 = time.perf_counter()
    model = build_generator_architecture(arch, cache_dir=run["cache_dir"], init_seed=seed).to(ctx.device)
    dataset = build_dataset(t["dataset"], "train", run["data_root"])
    iterations = int(t["iterations"])
    micro = int(micro_batch or t["micro_batch_size"] or t["batch_size"] // ctx.world_size)
    cfg = LoopConfig(iterations=iterations, global_batch=int(t["batch_size"]), micro_batch=micro, seed=seed,
                     checkpoint_every=int(t["checkpoint_every"]), log_every=int(t["log_every"]),
                     precision=t["precision"], num_workers=int(t["num_workers"]), grad_clip=dict(t["grad_clip"]))
    lr = float(t["lr"])
    optimizer = torch.optim.AdamW(_param_groups(model, lr, float(t["weight_decay"]),
                                                float(t["backbone_lr_multiplier"])), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t["lr_schedule"], iterations))
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
    add_run_config_arg(ap)
    args = ap.parse_args(argv)
    setup_logging()
    run_main(lambda: train_generator(load_run_config(args.run_config)))


if __name__ == "__main__":
    from fisa.utils.errors import run_cli

    run_cli(main)  # one `error: <file>: <what> — <fix>` line for a user-fixable error
