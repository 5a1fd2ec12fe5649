"""Numeric precision as configuration: `train.precision`, `eval.precision`, `efficiency.precision`.

- `fp32`: plain float32 (TF32 matmuls switched off on CUDA, so fp32 means fp32);
- `tf32`: float32 tensors, TF32 tensor-core matmuls/convolutions (CUDA, Ampere or newer);
- `bf16`: bfloat16 autocast (torch.autocast) on the run's device (CUDA or CPU).

A request the device cannot honour raises `PrecisionError` naming the key; it never falls back
to fp32 silently. Every record that measures something states the precision it ran in.
"""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "tf32", "bf16")


class PrecisionError(ValueError):
    """A precision the device cannot run."""


def check_precision(precision: str, device: torch.device, key: str) -> None:
    """Fail unless `device` can run `precision` (the message names `key`)."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"{key}: {precision!r} is not one of {PRECISIONS}")
    if precision == "tf32" and device.type != "cuda":
        raise PrecisionError(f"{key}: tf32 is a CUDA tensor-core mode; device {device.type} cannot run it "
                             "(use fp32 or bf16)")
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise PrecisionError(f"{key}: bf16 requested but {torch.cuda.get_device_name(device)} has no bf16 "
                                 "support (use fp32)")
        if device.type not in ("cuda", "cpu"):
            raise PrecisionError(f"{key}: bf16 autocast is not supported on {device.type} here (use fp32)")


def precision_context(precision: str, device: torch.device, key: str):
    """A context manager running its body in `precision` on `device` (see module docstring)."""
    check_precision(precision, device, key)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
