"""A tiny stand-in model + dataset driving `fisa.engine.loop` (also runnable as a script
so the resume and DDP tests can start real processes and kill them)."""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

from fisa.engine.distributed import cleanup_distributed, init_distributed
from fisa.engine.loop import LoopConfig, poly_lr_lambda, train_loop


class StandIn(nn.Module):
    """An MLP with a frozen first layer and dropout (randomness that resume must reproduce)."""

    def __init__(self, dropout=0.1):
        super().__init__()
        self.frozen = nn.Linear(8, 16)
        self.frozen.requires_grad_(False)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))

    def forward(self, x):
        return self.head(self.frozen(x))


class Points(torch.utils.data.Dataset):
    """20 fixed random points in 3 classes."""

    def __init__(self, n=20):
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 8, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def jitter(item):
    """Augmentation drawing from torch's global RNG, like torchvision's transforms."""
    return {"x": item["x"] + 0.1 * torch.randn(8), "y": item["y"]}


def build(seed=0, dropout=0.1):
    torch.manual_seed(seed)
    model = StandIn(dropout)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.05)
    return model, opt


def run(output_dir, iterations=12, global_batch=4, micro_batch=2, checkpoint_every=4, keep=2,
        kill_at=None, term_at=None, nan_at=None, seed=0, dropout=0.1):
    """Train the stand-in; `kill_at`/`term_at`/`nan_at` inject SIGKILL / SIGTERM / a NaN loss
    during that iteration's (0-based) first micro-step."""
    ctx = init_distributed("cpu")
    model, opt = build(seed, dropout)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, poly_lr_lambda(iterations))
    calls = {"n": 0}
    accumulation = global_batch // (micro_batch * ctx.world_size)

    def step_fn(m, batch):
        it = sched.last_epoch  # iterations done so far == current iteration index
        first = calls["n"] % accumulation == 0
        calls["n"] += 1
        if first and it == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if first and it == term_at:
            os.kill(os.getpid(), signal.SIGTERM)
        loss = nn.functional.cross_entropy(m(batch["x"]), batch["y"])
        if it == nan_at:
            loss = loss * float("nan")
        return {"loss": loss, "loss_ce": loss.detach()}

    collate = lambda items: {k: torch.stack([d[k] for d in items]) for k in items[0]}
    cfg = LoopConfig(iterations=iterations, global_batch=global_batch, micro_batch=micro_batch, seed=seed,
                     checkpoint_every=checkpoint_every, keep_checkpoints=keep, log_every=1, progress_bar=False)
    try:
        result = train_loop(model, Points(), step_fn, opt, sched, cfg, output_dir, ctx,
                            transform=jitter, collate_fn=collate)
        if ctx.is_main:
            torch.save(model.state_dict(), Path(output_dir) / "final.pt")
    finally:
        cleanup_distributed()
    return model, result


def test_standin_learns(tmp_path):
    """Sanity check of the stand-in itself: the loss goes down over training."""
    import csv

    run(tmp_path, iterations=30, checkpoint_every=100)
    rows = list(csv.DictReader(open(tmp_path / "losses.csv")))
    assert len(rows) == 30 and [int(r["iteration"]) for r in rows] == list(range(30))
    first = sum(float(r["loss"]) for r in rows[:5]) / 5
    last = sum(float(r["loss"]) for r in rows[-5:]) / 5
    assert last < first


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("output_dir")
    ap.add_argument("--iterations", type=int, default=12)
    ap.add_argument("--global-batch", type=int, default=4)
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--checkpoint-every", type=int, default=4)
    ap.add_argument("--kill-at", type=int)
    ap.add_argument("--term-at", type=int)
    ap.add_argument("--dropout", type=float, default=0.1)
    a = ap.parse_args()
    import logging
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    run(a.output_dir, a.iterations, a.global_batch, a.micro_batch, a.checkpoint_every,
        kill_at=a.kill_at, term_at=a.term_at, dropout=a.dropout)
    sys.exit(0)
