"""`python -m fisa.engine.train`: train one experiment (one seed) into a run folder.

    python -m fisa.engine.train --config config.yaml --preset small --experiment fisa \
        --seed 0 --output-dir results/small/runs/fisa/seed0

The run folder gets: `config.yaml` (the resolved config), `provenance.json` (commit,
versions, devices, world size, wall time and GPU-hours summed over restarts),
`checkpoints/`, `losses.csv`, `model_final.pt` (trainable state only: frozen parts are
rebuilt from the config) and, last and atomically, `done.json`.

Re-running the same command after a crash or pre-emption resumes from the newest intact
checkpoint. Several processes: `torchrun --nproc-per-node 4 -m fisa.engine.train ...` or
`srun python -m fisa.engine.train ...` (one task per GPU); the global batch stays
`train.batch_size` (gradient accumulation when micro-batch x processes is smaller).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
import yaml

from fisa.config import config_hash
from fisa.engine import provenance
from fisa.engine.common import (MODEL_FINAL, add_common_args, build_run_model, resolved_from_args,
                                setup_logging, split_batch, write_resolved_config)
from fisa.engine.distributed import DistContext, barrier, cleanup_distributed, init_distributed
from fisa.engine.loop import LoopConfig, Preempted, poly_lr_lambda, train_loop, trainable_state_dict
from fisa.utils.io import atomic_torch_save, atomic_write_json
from fisa.utils.markers import run_done_record

log = logging.getLogger("fisa.train")

# What determines the trained weights (the final model records it; evaluation checks it).
TRAIN_HASH_SECTIONS = ("variant", "model", "train")


def training_dataset(resolved: dict):
    """The training set (`train.dataset`, its train split) reduced to `train.data_fraction`
    of it, the subset chosen from the seed; plus its class names."""
    from fisa.data.datasets import build_dataset, subset
    from fisa.data.registry import get_meta

    t = resolved["train"]
    meta = get_meta(t["dataset"])
    dataset = build_dataset(t["dataset"], "train", resolved["data_root"], require_marker=True)
    fraction = float(t.get("data_fraction", 1.0))
    if fraction < 1.0:
        full = len(dataset)
        dataset = subset(dataset, fraction, resolved["seed"])
        log.info("training on %d of %d images (data_fraction %g, seed %d)", len(dataset), full, fraction,
                 resolved["seed"])
    return dataset, meta


def make_optimizer(model: torch.nn.Module, train_cfg: dict) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, 0.1x lr for the (partly) trained CLIP backbone."""
    from fisa.models.parameters import param_groups

    groups = param_groups(model, lr=float(train_cfg["lr"]), weight_decay=float(train_cfg["weight_decay"]),
                          backbone_lr_multiplier=float(train_cfg["backbone_lr_multiplier"]))
    groups = [g for g in groups if len(list(g["params"]))]
    if not groups:
        raise ValueError("nothing to train: the variant has no trainable parameters")
    return torch.optim.AdamW(groups, lr=float(train_cfg["lr"]), weight_decay=float(train_cfg["weight_decay"]))


class TrainingForward(torch.nn.Module):
    """Model + vocabulary + loss as one module, so DistributedDataParallel sees every
    trainable parameter used inside its forward (incl. the text tower when it trains).

    `forward(batch)` -> loss terms of Eq. 6 for one micro-batch. The vocabulary is encoded
    once when the text encoder is frozen (the model caches it) and with gradients when
    the variant adapts it (adapt_text_encoder).
    """

    def __init__(self, model: torch.nn.Module, class_names: list[list[str]], loss_weights: dict):
        super().__init__()
        self.model, self.class_names, self.loss_weights = model, class_names, loss_weights

    def forward(self, batch) -> dict[str, torch.Tensor]:
        images, targets = split_batch(batch)
        targets = [_drop_crowd(t) for t in targets]  # crowd regions are ignored, as in Mask2Former
        vocabulary = self.model.encode_vocabulary(self.class_names)
        outputs = self.model(images, vocabulary)
        return self.model.loss(outputs, targets, self.loss_weights)


def _forward_step(model, batch):
    return model(batch)


def _drop_crowd(t: dict) -> dict:
    if "iscrowd" in t and t["iscrowd"].any():
        keep = ~t["iscrowd"].bool()
        return {"labels": t["labels"][keep], "masks": t["masks"][keep]}
    return {"labels": t["labels"], "masks": t["masks"]}


def _check_run_dir(out: Path, resolved: dict) -> None:
    """Refuse to resume a run folder that holds another config's checkpoints."""
    existing = out / "config.yaml"
    if existing.exists() and (out / "checkpoints").is_dir():
        old = yaml.safe_load(existing.read_text())
        if config_hash(old, TRAIN_HASH_SECTIONS) != config_hash(resolved, TRAIN_HASH_SECTIONS):
            raise ValueError(f"{out}: holds checkpoints of a different model/train config; "
                             "delete the folder (or choose another --output-dir) to start afresh")


class AttemptLog:
    """This start's entry in provenance.json's `attempts`, and the totals over all starts.

    GPU-hours = sum over attempts of wall time x processes (one GPU each); on CPU the same
    product is recorded and `device` says it was a CPU. An attempt that ends by itself
    (finished, pre-empted, NaN, crash) records its own wall time. One that is SIGKILLed (SLURM
    time limit past the grace period, the OOM killer, a lost node) cannot, so rank 0 keeps a
    heartbeat, `attempt_running.json`, rewritten atomically every `heartbeat_seconds` and at
    every checkpoint; the next start finds it and records that attempt as `killed` with the
    wall time of its last heartbeat (a lower bound: at most `heartbeat_seconds` are lost)."""

    RUNNING = "attempt_running.json"

    def __init__(self, out: Path, prov: dict, ctx: DistContext, heartbeat_seconds: float = 60.0,
                 t0: float | None = None):
        self.out, self.prov, self.ctx = out, prov, ctx
        self.heartbeat_seconds = heartbeat_seconds
        self.t0 = time.perf_counter() if t0 is None else t0
        self._last_beat = self.t0
        self.resumed_from = None

    @property
    def prov_path(self) -> Path:
        return self.out / "provenance.json"

    def _attempt(self, outcome: str, iteration: int | None = None) -> dict:
        a = {"started": self.prov["started"], "ended": provenance.now(),
             "wall_seconds": round(time.perf_counter() - self.t0, 3), "resumed_from": self.resumed_from,
             "world_size": self.ctx.world_size, "device": self.prov["device"], "outcome": outcome}
        if iteration is not None:
            a["iteration"] = iteration
        return a

    def _append(self, attempt: dict, **extra) -> None:
        attempts = json.loads(self.prov_path.read_text()).get("attempts", []) if self.prov_path.exists() else []
        attempts.append(attempt)
        self.prov.update(attempts=attempts, wall_seconds=round(sum(a["wall_seconds"] for a in attempts), 3),
                         gpu_hours=round(sum(a["wall_seconds"] * a["world_size"] for a in attempts) / 3600, 6),
                         **extra)
        atomic_write_json(self.prov_path, self.prov)

    def begin(self) -> None:
        """Record a previous attempt that was killed without recording itself; start the heartbeat."""
        if not self.ctx.is_main:
            return
        running = self.out / self.RUNNING
        if running.exists():
            try:
                stale = json.loads(running.read_text())
                stale["outcome"] = "killed (wall time to its last heartbeat)"
                log.warning("%s: the previous attempt (started %s) ended without recording itself; "
                            "counting its %.0f s to its last heartbeat", self.out, stale.get("started"),
                            stale.get("wall_seconds", 0.0))
                self._append(stale)
            except (ValueError, KeyError, TypeError) as e:  # a half-written heartbeat cannot exist (atomic)
                log.warning("%s: unreadable, ignored (%s)", running, e)
        atomic_write_json(running, self._attempt("running"))

    def heartbeat(self, iteration: int, checkpointed: bool = False) -> None:
        """After each iteration (the training loop's `on_iteration`; rank 0 writes): rewrite the
        heartbeat at a checkpoint or when `heartbeat_seconds` have passed since the last one."""
        if not self.ctx.is_main:
            return
        now = time.perf_counter()
        if checkpointed or now - self._last_beat >= self.heartbeat_seconds:
            self._last_beat = now
            atomic_write_json(self.out / self.RUNNING, self._attempt("running", iteration))

    def end(self, outcome: str, **extra) -> None:
        """Record this attempt (rank 0) and stop the heartbeat."""
        if not self.ctx.is_main:
            return
        self._append(self._attempt(outcome), **extra)
        (self.out / self.RUNNING).unlink(missing_ok=True)


def _build_and_train(resolved: dict, out: Path, ctx: DistContext, micro_batch: int | None,
                     progress_bar: bool | None, attempt: AttemptLog, train_hash: str):
    """Build the run's model and train it (nothing to train at 0 iterations);
    returns (model, LoopResult or None)."""
    t = resolved["train"]
    iterations = int(t["iterations"])
    model = build_run_model(resolved, ctx.device)
    if iterations == 0:
        return model, None
    dataset, meta = training_dataset(resolved)
    from fisa.data.transforms import collate, train_transform

    transform = train_transform(int(t["crop_size"]), tuple(t["scale_range"]))
    micro = int(micro_batch or t.get("micro_batch_size") or t["batch_size"] // ctx.world_size)
    cfg = LoopConfig(iterations=iterations, global_batch=int(t["batch_size"]), micro_batch=micro,
                     seed=resolved["seed"], checkpoint_every=int(t.get("checkpoint_every", 1000)),
                     log_every=int(t.get("log_every", 20)), precision=t.get("precision", "fp32"),
                     num_workers=int(t.get("num_workers", 0)), grad_clip=t.get("grad_clip"),
                     progress_bar=progress_bar)
    optimizer = make_optimizer(model, t)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, poly_lr_lambda(iterations, power=float(t.get("poly_power", 0.9)),
                                  warmup=int(t.get("warmup_iterations", 0))))
    result = train_loop(TrainingForward(model, meta.classes, t["loss_weights"]), dataset, _forward_step,
                        optimizer, scheduler, cfg, out, ctx, transform=transform, collate_fn=collate,
                        checkpoint_extra={"config_hash": train_hash}, on_iteration=attempt.heartbeat)
    return model, result


def train(resolved: dict, output_dir: str | Path, micro_batch: int | None = None,
          ctx: DistContext | None = None, progress_bar: bool | None = None) -> Path:
    """Train `resolved` (from `resolve_experiment`) into `output_dir`; returns `done.json`'s path."""
    out = Path(output_dir)
    ctx = ctx or init_distributed(resolved["device"])
    t = resolved["train"]
    iterations = int(t["iterations"])
    t0 = time.perf_counter()
    train_hash = config_hash(resolved, TRAIN_HASH_SECTIONS)
    if ctx.is_main:
        _check_run_dir(out, resolved)
        out.mkdir(parents=True, exist_ok=True)
        write_resolved_config(out / "config.yaml", resolved)
    barrier(ctx)
    prov = provenance.collect(ctx.device, ctx.world_size)
    prov.update(experiment=resolved["experiment"], preset=resolved["preset"], seed=resolved["seed"],
                config_hash=config_hash(resolved), train_hash=train_hash)
    attempt = AttemptLog(out, prov, ctx, t0=t0)
    attempt.begin()

    try:
        model, result = _build_and_train(resolved, out, ctx, micro_batch, progress_bar, attempt, train_hash)
    except BaseException as e:  # pre-emption, NaN, crash: the attempt's wall time still counts
        attempt.end("preempted" if isinstance(e, Preempted) else f"failed: {type(e).__name__}")
        raise
    resumed_from = 0
    if result is not None:
        resumed_from = result.resumed_from
        log.info("trained %d iterations (%d this attempt) in %.1fs", iterations, iterations - resumed_from,
                 result.wall_seconds)
    else:
        log.info("%s: 0 iterations (variant %s): writing the run folder without training",
                 resolved["experiment"], resolved["variant"])

    if ctx.is_main:
        atomic_torch_save(out / MODEL_FINAL, {"model": trainable_state_dict(model), "config_hash": train_hash,
                                              "experiment": resolved["experiment"], "iterations": iterations})
        attempt.resumed_from = resumed_from
        attempt.end("finished", iterations=iterations,
                    trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad))
        atomic_write_json(out / "done.json", run_done_record(out, {  # lists (and hashes) what it vouches for
            "experiment": resolved["experiment"], "seed": resolved["seed"], "iterations": iterations,
            "config_hash": prov["config_hash"], "finished": provenance.now()}))
    barrier(ctx)
    return out / "done.json"


def main(argv=None) -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap)
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--micro-batch", type=int, default=None,
                    help="images per process per step (default: train.micro_batch_size, else batch_size / processes)")
    args = ap.parse_args(argv)
    resolved = resolved_from_args(args)
    ctx = init_distributed(resolved["device"])
    setup_logging(ctx.rank)
    try:
        train(resolved, args.output_dir, args.micro_batch, ctx)
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    from fisa.utils.errors import run_cli

    run_cli(main)  # one `error: <file>: <what> — <fix>` line for a user-fixable error
