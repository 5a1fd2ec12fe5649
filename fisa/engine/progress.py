"""Training progress: a bar on a terminal, plain periodic lines in SLURM logs, a loss CSV.

On a terminal a tqdm bar shows iteration, loss terms, lr and it/s. When stderr is not
a terminal (a SLURM log file) a bar would write thousands of carriage returns, so one
plain line is logged every `log_every` iterations instead. Every iteration's losses go
to `losses.csv` (and to TensorBoard if it is installed).
"""
from __future__ import annotations

import csv
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("fisa.train")


class Progress:
    """Reports iterations `start..total` with their loss terms and learning rate."""

    def __init__(self, total: int, start: int = 0, log_every: int = 20, enabled: bool = True,
                 use_bar: bool | None = None):
        self.total, self.start, self.log_every, self.enabled = total, start, max(1, log_every), enabled
        self.use_bar = (sys.stderr.isatty() if use_bar is None else use_bar) and enabled
        self._t0 = time.perf_counter()
        self._bar = None
        if self.use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=start, dynamic_ncols=True, desc="train")

    def update(self, iteration: int, terms: dict[str, float], lr: float) -> None:
        """Report that `iteration` (0-based) finished with `terms` and learning rate `lr`."""
        if not self.enabled:
            return
        done = iteration + 1 - self.start
        rate = done / max(time.perf_counter() - self._t0, 1e-9)
        if self._bar is not None:
            self._bar.set_postfix({**{k: f"{v:.3f}" for k, v in terms.items()}, "lr": f"{lr:.2e}"},
                                  refresh=False)
            self._bar.update(1)
        elif (iteration + 1) % self.log_every == 0 or iteration + 1 == self.total:
            losses = " ".join(f"{k}={v:.4f}" for k, v in terms.items())
            eta = (self.total - iteration - 1) / max(rate, 1e-9)
            log.info("iter %d/%d %s lr=%.3e %.2f it/s eta %.0fs", iteration + 1, self.total, losses,
                     lr, rate, eta)

    def close(self) -> None:
        """Close the bar (if any)."""
        if self._bar is not None:
            self._bar.close()


class LossLog:
    """Appends one row per iteration to a CSV; on resume, rows past the resume point are dropped.

    Columns: iteration, lr, grad_norm (before clipping), seconds (wall time of the iteration),
    then the loss terms in the order first seen. Optionally mirrors the terms to TensorBoard.
    """

    def __init__(self, path: str | Path, resume_iteration: int = 0, tensorboard: bool = True):
        self.path = Path(path)
        self.fields: list[str] | None = None
        rows = []
        if self.path.exists() and resume_iteration > 0:
            with open(self.path, newline="") as fh:
                reader = csv.DictReader(fh)
                self.fields = reader.fieldnames
                rows = [r for r in reader if int(r["iteration"]) < resume_iteration]
        # Rewrite instead of appending: iterations after the last checkpoint are redone.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w", newline="")
        self._writer = None
        if self.fields:
            if "grad_norm" not in self.fields:  # a log begun before grad_norm was recorded: its rows get ""
                self.fields.insert(self.fields.index("lr") + 1, "grad_norm")
            self._writer = csv.DictWriter(self._fh, fieldnames=self.fields, restval="")
            self._writer.writeheader()
            self._writer.writerows(rows)
            self._fh.flush()
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.path.parent / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self._tb = None

    def write(self, iteration: int, terms: dict[str, float], lr: float, seconds: float,
              grad_norm: float | None = None) -> None:
        """Record one iteration: lr (of the un-multiplied groups), the gradient L2 norm before
        clipping (empty when not given), then every loss term."""
        row = {"iteration": iteration, "lr": lr, "grad_norm": "" if grad_norm is None else grad_norm,
               "seconds": round(seconds, 6), **terms}
        if self._writer is None:
            self.fields = list(row)
            self._writer = csv.DictWriter(self._fh, fieldnames=self.fields, extrasaction="ignore")
            self._writer.writeheader()
        self._writer.writerow(row)
        self._fh.flush()
        if self._tb is not None:
            for k, v in terms.items():
                self._tb.add_scalar(f"train/{k}", v, iteration)
            self._tb.add_scalar("train/lr", lr, iteration)
            if grad_norm is not None:
                self._tb.add_scalar("train/grad_norm", grad_norm, iteration)

    def close(self) -> None:
        """Flush and close."""
        self._fh.close()
        if self._tb is not None:
            self._tb.close()
