"""`python -m fisa.engine.train`: train one experiment (one seed) into a run folder.

    python -m fisa.engine.train --run-config results/small/configs/runs/fisa/seed0.yaml

The run config (`fisa.config.run_config`, written by the workflow's `run_config` rule) is the
only input; its `checkpoints.run_dir` is the run folder. The run folder gets:
`run_config.yaml` (a copy of it), `provenance.json` (commit,
versions, devices, world size, wall time and GPU-hours summed over restarts),
`checkpoints/`, `losses.csv`, `model_final.pt` (trainable state only: frozen parts are
rebuilt from the config) and, last and atomically, `done.json`.

Re-running the same command after a crash or pre-emption resumes from the newest intact
checkpoint. A run folder that holds the results of another model/train config (the run config
changed) is moved aside whole, to `<run folder>.replaced-<UTC time>`, and the run starts
afresh. Deterministic errors exit 65/78 (`fisa.engine.cli.run_main`), pre-emption 75.
Several processes: `torchrun --nproc-per-node 4 -m fisa.engine.train ...` or
`srun python -m fisa.engine.train ...` (one task per GPU); the global batch stays
`train.batch_size` (gradient accumulation when micro-batch x processes is smaller).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import time
from pathlib import Path

import torch
import yaml

from fisa.config import config_hash, load_run_config, write_run_config
from fisa.engine import provenance
from fisa.engine.cli import add_run_config_arg, run_main, setup_logging
from fisa.engine.distributed import DistContext, barrier, cleanup_distributed, init_distributed
from fisa.engine.loop import LoopConfig, Preempted, lr_lambda, train_loop, trainable_state_dict
from fisa.engine.run_model import MODEL_FINAL, RUN_CONFIG, build_run_model, split_batch
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
    fraction = float(t["data_fraction"])
    if fraction < 1.0:
        full = len(dataset)
        dataset = subset(dataset, fraction, resolved["seed"])
        log.info("training on %d of %d images (data_fraction %g, seed %d)", len(dataset), full, fraction,
                 resolved["seed"])
    return dataset, meta


def make_optimizer(model: torch.nn.Module, train_cfg: dict) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters: lr x train.backbone_lr_multiplier for the groups in
    train.backbone_lr_multiplier_applies_to; weight decay per kind (train.weight_decay,
    weight_decay_bias, weight_decay_norm, weight_decay_embedding). Every value from the config."""
    from fisa.models.parameters import param_groups

    groups = param_groups(model, lr=float(train_cfg["lr"]), weight_decay=float(train_cfg["weight_decay"]),
                          backbone_lr_multiplier=float(train_cfg["backbone_lr_multiplier"]),
                          multiplier_groups=list(train_cfg["backbone_lr_multiplier_applies_to"]),
                          weight_decay_bias=float(train_cfg["weight_decay_bias"]),
                          weight_decay_norm=float(train_cfg["weight_decay_norm"]),
                          weight_decay_embedding=float(train_cfg["weight_decay_embedding"]))
    groups = [g for g in groups if len(list(g["params"]))]
    if not groups:
        raise ValueError("nothing to train: the variant has no trainable parameters")
    return torch.optim.AdamW(groups, lr=float(train_cfg["lr"]), weight_decay=float(train_cfg["weight_decay"]))


class TrainingForward(torch.nn.Module):
    """Model + vocabulary + loss as one module, so DistributedDataParallel sees every
    trainable parameter used inside its forward (incl. the text tower when it trains).

    `forward(batch)` -> loss terms of Eq. 6 for one micro-batch. The vocabulary is encoded
    once when the text encoder is frozen (the model caches it) and with gradients when
    the variant trains it (`text_encoder` in the variant table's `trains`).
    """

    def __init__(self, model: torch.nn.Module, class_names: list[list[str]], loss_weights: dict,
                 no_object_weight: float, criterion: dict):
        super().__init__()
        self.model, self.class_names, self.loss_weights = model, class_names, loss_weights
        self.no_object_weight = no_object_weight
        self.criterion = criterion  # train.criterion (point | dense)

    def forward(self, batch) -> dict[str, torch.Tensor]:
        images, targets = split_batch(batch)
        targets = [_drop_crowd(t) for t in targets]  # crowd regions are ignored, as in Mask2Former
        vocabulary = self.model.encode_vocabulary(self.class_names)
        outputs = self.model(images, vocabulary)
        return self.model.loss(outputs, targets, self.loss_weights, no_object_weight=self.no_object_weight,
                               criterion=self.criterion)


def _forward_step(model, batch):
    return model(batch)


def _drop_crowd(t: dict) -> dict:
    if "iscrowd" in t and t["iscrowd"].any():
        keep = ~t["iscrowd"].bool()
        return {"labels": t["labels"][keep], "masks": t["masks"][keep]}
    return {"labels": t["labels"], "masks": t["masks"]}


def _folder_train_hash(out: Path) -> str | None:
    """The model/train hash of the config a run folder's contents were made with (None: unknown)."""
    for name in (RUN_CONFIG, "config.yaml"):  # config.yaml: folders written before run_config.yaml
        path = out / name
        if path.exists():
            try:
                return config_hash(yaml.safe_load(path.read_text()), TRAIN_HASH_SECTIONS)
            except (yaml.YAMLError, AttributeError, TypeError):
                return None
    return None


def set_aside_if_changed(out: Path, resolved: dict) -> Path | None:
    """Move a run folder made with another model/train config (or an unknown one) aside, whole,
    to the sibling `<name>.replaced-<UTC time>` so that nothing is lost; the run then starts
    afresh. An absent or empty folder, or one of the same config (a resume), is left alone.
    Returns where the old folder went, or None."""
    if not out.is_dir() or not any(out.iterdir()):
        return None
    if _folder_train_hash(out) == config_hash(resolved, TRAIN_HASH_SECTIONS):
        return None
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = out.with_name(f"{out.name}.replaced-{stamp}")
    n = 1
    while aside.exists():
        aside = out.with_name(f"{out.name}.replaced-{stamp}-{n}")
        n += 1
    os.rename(out, aside)
    log.warning("%s: held the results of another model/train config; moved aside to %s, training afresh",
                out, aside)
    return aside


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


def loop_config(resolved: dict, world_size: int = 1, micro_batch: int | None = None,
                progress_bar: bool | None = None) -> LoopConfig:
    """The training loop's settings, all from the run config's `train` section."""
    t = resolved["train"]
    micro = int(micro_batch or t["micro_batch_size"] or t["batch_size"] // world_size)
    return LoopConfig(iterations=int(t["iterations"]), global_batch=int(t["batch_size"]), micro_batch=micro,
                      seed=resolved["seed"], checkpoint_every=int(t["checkpoint_every"]),
                      log_every=int(t["log_every"]), precision=t["precision"],
                      num_workers=int(t["num_workers"]), grad_clip=dict(t["grad_clip"]), progress_bar=progress_bar)


def _build_and_train(resolved: dict, out: Path, ctx: DistContext, micro_batch: int | None,
                     progress_bar: bool | None, attempt: AttemptLog, train_hash: str):
    """Build the run's model and train it (nothing to train at 0 iterations);
    returns (model, LoopResult or None)."""
    t = resolved["train"]
    iterations = int(t["iterations"])
    model = build_run_model(resolved, ctx.device)
    if iterations == 0:
        return model, None
    model.gradient_checkpointing = bool(t["gradient_checkpointing"])   # a memory lever: same values
    dataset, meta = training_dataset(resolved)
    from fisa.data.transforms import collate, train_transform

    transform = train_transform(int(t["crop_size"]), tuple(t["scale_range"]))
    cfg = loop_config(resolved, ctx.world_size, micro_batch, progress_bar)
    optimizer = make_optimizer(model, t)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t["lr_schedule"], iterations))
    forward = TrainingForward(model, meta.classes, t["loss_weights"], float(t["no_object_weight"]), t["criterion"])
    result = train_loop(forward, dataset, _forward_step,
                        optimizer, scheduler, cfg, out, ctx, transform=transform, collate_fn=collate,
                        checkpoint_extra={"config_hash": train_hash}, on_iteration=attempt.heartbeat)
    return model, result


def train(resolved: dict, output_dir: str | Path | None = None, micro_batch: int | None = None,
          ctx: DistContext | None = None, progress_bar: bool | None = None) -> Path:
    """Train `resolved` (a run config, or `resolve_experiment`'s dict) into `output_dir` (default:
    the run config's `checkpoints.run_dir`); returns `done.json`'s path. A folder of another
    model/train config is moved aside first (`set_aside_if_changed`)."""
    out = Path(output_dir if output_dir is not None else resolved["checkpoints"]["run_dir"])
    ctx = ctx or init_distributed(resolved["device"])
    t = resolved["train"]
    iterations = int(t["iterations"])
    t0 = time.perf_counter()
    train_hash = config_hash(resolved, TRAIN_HASH_SECTIONS)
    if ctx.is_main:
        set_aside_if_changed(out, resolved)
        out.mkdir(parents=True, exist_ok=True)
        write_run_config(out / RUN_CONFIG, resolved)
    barrier(ctx)
    if _finished(out, train_hash):  # same model/train config, already trained (e.g. an eval edit)
        if ctx.is_main:
            log.info("%s: already trained with this model/train config; only done.json is rewritten", out)
            _write_done(out, resolved, iterations, config_hash(resolved))
        barrier(ctx)
        return out / "done.json"
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
        _write_done(out, resolved, iterations, prov["config_hash"])
    barrier(ctx)
    return out / "done.json"


def _finished(out: Path, train_hash: str) -> bool:
    """The folder holds a finished run (final model, last attempt finished) of `train_hash`."""
    prov_path = out / "provenance.json"
    if not (out / MODEL_FINAL).exists() or not prov_path.exists():
        return False
    try:
        prov = json.loads(prov_path.read_text())
        return prov["train_hash"] == train_hash and prov["attempts"][-1]["outcome"] == "finished"
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def _write_done(out: Path, resolved: dict, iterations: int, full_hash: str) -> None:
    atomic_write_json(out / "done.json", run_done_record(out, {  # lists (and hashes) what it vouches for
        "experiment": resolved["experiment"], "seed": resolved["seed"], "iterations": iterations,
        "config_hash": full_hash, "finished": provenance.now()}))


def main(argv=None) -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_config_arg(ap)
    args = ap.parse_args(argv)

    def body():
        resolved = load_run_config(args.run_config)
        ctx = init_distributed(resolved["device"])
        setup_logging(ctx.rank)
        try:
            train(resolved, ctx=ctx)
        finally:
            cleanup_distributed()

    run_main(body)


if __name__ == "__main__":
    from fisa.utils.errors import run_cli

    run_cli(main)  # one `error: <file>: <what> — <fix>` line for a user-fixable error
