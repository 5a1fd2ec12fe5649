"""The training loop, independent of FISA: any module, any loss, any map-style dataset.

What it guarantees (tested on a stand-in module in tests/test_engine_loop.py):
- the global batch is `global_batch` on any number of processes (gradient accumulation);
- data order and augmentation are a pure function of (seed, iteration) (`sampling.py`),
  and the model's own randomness is reseeded per (seed, rank, iteration), so a run
  killed at any point and resumed from its latest checkpoint ends with bit-identical
  weights;
- checkpoints every `checkpoint_every` iterations and on SIGTERM / SIGUSR1 (then the
  process exits with `PREEMPTED_EXIT_CODE`), atomically, the newest intact one is used
  on restart;
- a non-finite loss stops the run before the optimizer step with an error naming
  the iteration and the last good checkpoint (which is left untouched).
"""
from __future__ import annotations

import logging
import math
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fisa.engine.checkpoint import CheckpointManager
from fisa.engine.distributed import DistContext, all_reduce_any, barrier
from fisa.engine.precision import precision_context
from fisa.engine.progress import LossLog, Progress
from fisa.engine.sampling import MicroBatchSampler, SampleStream, accumulation_steps, mix_seed

log = logging.getLogger("fisa.train")

# EX_TEMPFAIL: "try again later". The workflow/SLURM requeue treats it as a preemption.
PREEMPTED_EXIT_CODE = 75


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the message names the iteration and the last good checkpoint."""


class Preempted(SystemExit):
    """Raised after the checkpoint written on SIGTERM/SIGUSR1; exits with PREEMPTED_EXIT_CODE."""

    def __init__(self, message: str):
        super().__init__(PREEMPTED_EXIT_CODE)
        self.message = message


@dataclass
class LoopConfig:
    """Sizes and schedule of one training run."""

    iterations: int
    global_batch: int
    micro_batch: int
    seed: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 20
    precision: str = "fp32"          # fp32 | tf32 | bf16 (autocast on the device): fisa.engine.precision
    num_workers: int = 0
    # {type: full_model | norm | value | none, value}: see `clip_gradients` (train.grad_clip)
    grad_clip: dict | None = None
    progress_bar: bool | None = None  # None: a bar only when stderr is a terminal


@dataclass
class LoopResult:
    """What happened: iterations done, where it resumed from, timings."""

    iterations: int
    resumed_from: int
    wall_seconds: float
    train_seconds: float
    last_terms: dict[str, float] = field(default_factory=dict)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters that require gradients, plus all buffers: what a run changes.

    Frozen parameters are left out: they are rebuilt from the config (pretrained
    weights, or the seeded random initialisation of the small preset).
    """
    model = unwrap(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n for n, _ in model.named_buffers()}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in trainable or k in buffers}


def load_trainable_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load a `trainable_state_dict` into `model`; every trainable parameter must be in it."""
    model = unwrap(model)
    unexpected = sorted(set(state) - set(model.state_dict()))
    if unexpected:
        raise KeyError(f"{source}: keys not in the model (wrong experiment or config?): {unexpected[:5]}")
    missing = sorted(n for n, p in model.named_parameters() if p.requires_grad and n not in state)
    if missing:
        raise KeyError(f"{source}: trainable parameters missing: {missing[:5]}")
    model.load_state_dict(state, strict=False)


def poly_lr_lambda(iterations: int, power: float = 0.9, warmup: int = 0) -> Callable[[int], float]:
    """detectron2's WarmupPolyLR as a LambdaLR factor: linear warm-up, then (1 - t/T)^power."""
    def factor(step: int) -> float:
        w = min(1.0, (step + 1) / warmup) if warmup else 1.0
        return w * (1.0 - min(step, iterations) / max(iterations, 1)) ** power
    return factor


LR_SCHEDULES = ("constant", "poly", "multistep")


def lr_lambda(schedule: dict, iterations: int) -> Callable[[int], float]:
    """The lr factor at iteration `step` (a LambdaLR lambda) of `train.lr_schedule`.

    schedule: {type: constant | poly | multistep, warmup_iterations, warmup_factor,
    poly_power, steps (fractions of `iterations`), gamma}. The decay, as detectron2's
    solver computes it: constant 1; poly (1 - step/iterations)^poly_power (WarmupPolyLR);
    multistep gamma^(number of milestones <= step) with milestones round(f x iterations)
    (WarmupMultiStepLR). It is multiplied, for step < warmup_iterations, by detectron2's
    linear warm-up factor warmup_factor x (1 - a) + a, a = step / warmup_iterations
    (warmup_factor 1.0 makes the warm-up a no-op, as in Mask2Former's and MaskCLIP's configs).
    """
    kind = schedule["type"]
    if kind not in LR_SCHEDULES:
        raise ValueError(f"train.lr_schedule.type: {kind!r} is not one of {LR_SCHEDULES}")
    warmup, warmup_factor = int(schedule["warmup_iterations"]), float(schedule["warmup_factor"])
    power, gamma = float(schedule["poly_power"]), float(schedule["gamma"])
    fractions = [float(f) for f in schedule["steps"]]
    if any(not 0 < f <= 1 for f in fractions) or fractions != sorted(fractions):
        raise ValueError(f"train.lr_schedule.steps: expected increasing fractions of the run in (0, 1], got {fractions}")
    milestones = [round(f * iterations) for f in fractions]

    def factor(step: int) -> float:
        if kind == "poly":
            decay = (1.0 - min(step, iterations) / max(iterations, 1)) ** power
        elif kind == "multistep":
            decay = gamma ** sum(step >= m for m in milestones)
        else:
            decay = 1.0
        if step < warmup:
            alpha = step / warmup
            decay *= warmup_factor * (1 - alpha) + alpha
        return decay
    return factor


GRAD_CLIP_TYPES = ("full_model", "norm", "value", "none")


def clip_gradients(params: list[torch.Tensor], clip: dict | None) -> float:
    """Clip the gradients of `params` in place as `train.grad_clip` says; returns the L2 norm
    of all gradients together BEFORE clipping (logged as grad_norm).

    full_model: one L2 norm over all parameters, scaled to `value` (Mask2Former's and MaskCLIP's
    FullModelGradientClippingOptimizer); norm: each parameter's gradient norm separately
    (detectron2's CLIP_TYPE "norm"); value: each element to [-value, value] (detectron2's
    "value"); none (or None): unchanged.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    total = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads])))
    kind = "none" if clip is None else clip["type"]
    if kind not in GRAD_CLIP_TYPES:
        raise ValueError(f"train.grad_clip.type: {kind!r} is not one of {GRAD_CLIP_TYPES}")
    if kind == "full_model":
        torch.nn.utils.clip_grad_norm_(params, float(clip["value"]))
    elif kind == "norm":
        for p in params:
            if p.grad is not None:
                torch.nn.utils.clip_grad_norm_([p], float(clip["value"]))
    elif kind == "value":
        torch.nn.utils.clip_grad_value_(params, float(clip["value"]))
    return total


def to_device(obj: Any, device: torch.device) -> Any:
    """Move tensors inside nested lists/tuples/dicts to `device`."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


class _SignalFlag:
    """Remembers SIGTERM/SIGUSR1 (SLURM's pre-emption warning) instead of dying mid-write."""

    def __init__(self):
        self.received: str | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a notebook worker): no handler
                pass
        return self

    def _handle(self, signum, frame):
        # only the flag: a handler that writes (logging) can interrupt a write to the same stream
        # and fail with "reentrant call inside BufferedWriter"; the loop logs when it acts on it
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train_loop(model: nn.Module, dataset: Dataset, step_fn: Callable[[nn.Module, Any], dict[str, torch.Tensor]],
               optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
               cfg: LoopConfig, output_dir: str | Path, ctx: DistContext = DistContext(),
               transform: Callable | None = None, collate_fn: Callable | None = None,
               checkpoint_extra: dict | None = None,
               on_iteration: Callable[[int, bool], None] | None = None) -> LoopResult:
    """Train `model` for `cfg.iterations` iterations, resuming from `output_dir/checkpoints`.

    `step_fn(model, batch)` runs the (possibly DDP-wrapped) model on one micro-batch
    and returns loss terms with a scalar `loss` to back-propagate. `scheduler` steps once
    per iteration. Writes `checkpoints/` and `losses.csv` under `output_dir` (rank 0).
    `on_iteration(done, checkpointed)` is called after each iteration (every rank).
    """
    t_start = time.perf_counter()
    # fp16 is not offered: a GradScaler's skipped steps on inf would clash with the NaN stop.
    # A precision the device cannot run fails here (fisa.engine.precision), never silently fp32.
    autocast = precision_context(cfg.precision, ctx.device, "train.precision")
    output_dir = Path(output_dir)
    ckpts = CheckpointManager(output_dir / "checkpoints", keep=cfg.keep_checkpoints)
    accumulation = accumulation_steps(cfg.global_batch, cfg.micro_batch, ctx.world_size)

    start, last_good = 0, None
    found = ckpts.latest_valid()
    if found is not None:
        start, last_good, state = found
        load_trainable_state_dict(model, state["model"], source=str(last_good))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("global_batch") != cfg.global_batch:
            raise ValueError(f"{last_good}: written with global batch {state.get('global_batch')}, "
                             f"this run uses {cfg.global_batch}; use a fresh output directory")
        if ctx.is_main:
            log.info("resuming from %s (iteration %d of %d)", last_good, start, cfg.iterations)

    if ctx.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            find_unused_parameters=True)  # variants leave different parts unused (e.g. adapter_0)

    stream = SampleStream(dataset, cfg.seed, transform)
    sampler = MicroBatchSampler(start, cfg.iterations, cfg.global_batch, cfg.micro_batch, ctx.rank, ctx.world_size)
    loader = DataLoader(stream, batch_sampler=sampler, collate_fn=collate_fn, num_workers=cfg.num_workers,
                        pin_memory=ctx.device.type == "cuda", persistent_workers=False)
    params = [p for p in unwrap(model).parameters() if p.requires_grad]
    losslog = LossLog(output_dir / "losses.csv", resume_iteration=start) if ctx.is_main else None
    progress = Progress(cfg.iterations, start, cfg.log_every, enabled=ctx.is_main, use_bar=cfg.progress_bar)

    def save(iteration: int) -> Path | None:
        path = None
        if ctx.is_main:
            path = ckpts.save({
                "iteration": iteration, "model": trainable_state_dict(model),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "global_batch": cfg.global_batch, "world_size": ctx.world_size, "seed": cfg.seed,
                **(checkpoint_extra or {}),
            }, iteration)
        barrier(ctx)
        return path

    model.train()
    terms_avg: dict[str, float] = {}
    batches = iter(loader)
    train_seconds = 0.0
    try:
        with _SignalFlag() as flag:
            for it in range(start, cfg.iterations):
                t_it = time.perf_counter()
                # Model randomness (dropout, ...) as a function of the iteration: exact resume.
                torch.manual_seed(mix_seed(cfg.seed, ctx.rank, it, 0x3D))
                optimizer.zero_grad(set_to_none=True)
                sums: dict[str, float] = {}
                finite = True
                for a in range(accumulation):
                    batch = to_device(next(batches), ctx.device)
                    sync = a == accumulation - 1 or not ctx.distributed
                    with (nullcontext() if sync else model.no_sync()):
                        with autocast:
                            terms = step_fn(model, batch)
                        loss = terms["loss"]
                        finite &= bool(torch.isfinite(loss.detach()).all())
                        (loss / accumulation).backward()
                    for k, v in terms.items():
                        sums[k] = sums.get(k, 0.0) + float(v.detach()) / accumulation
                if all_reduce_any(not finite, ctx):
                    raise NonFiniteLossError(
                        f"non-finite loss at iteration {it} ({', '.join(f'{k}={v}' for k, v in sums.items())}); "
                        f"the optimizer step was not taken; last good checkpoint: {last_good or 'none'} "
                        f"(lower train.lr, or check the data of this iteration)")
                grad_norm = clip_gradients(params, cfg.grad_clip)
                optimizer.step()
                lr = max(g["lr"] for g in optimizer.param_groups)  # the base lr (backbone groups are scaled down)
                scheduler.step()
                dt = time.perf_counter() - t_it
                train_seconds += dt
                terms_avg = sums
                if losslog is not None:
                    losslog.write(it, sums, lr, dt, grad_norm=grad_norm)
                progress.update(it, sums, lr)
                done = it + 1
                stop = all_reduce_any(flag.received is not None, ctx)
                if stop:
                    log.warning("received %s: checkpointing iteration %d and exiting",
                                flag.received or "a signal on another rank", done)
                checkpointed = done % cfg.checkpoint_every == 0 or stop or done == cfg.iterations
                if checkpointed:
                    last_good = save(done) or last_good
                if on_iteration is not None:
                    on_iteration(done, checkpointed)
                if stop:
                    raise Preempted(f"checkpointed iteration {done} after {flag.received or 'a signal on another rank'}; "
                                    f"rerun the same command to resume")
    finally:
        progress.close()
        if losslog is not None:
            losslog.close()
    return LoopResult(cfg.iterations, start, time.perf_counter() - t_start, train_seconds, terms_avg)
