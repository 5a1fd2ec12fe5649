"""Process-group setup from `torchrun` or `srun` environment variables.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT. Under
`srun` (one task per GPU) only SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID and the
node list are set; we derive the rest (master = first node of SLURM_JOB_NODELIST,
port from the job id so two jobs on one node do not collide). Backend: NCCL on CUDA,
gloo on CPU (the CPU tests run 2 gloo processes).
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Who this process is: rank, world size, local rank and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that writes shared files)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def env_rank_info(environ: dict | None = None) -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's variables, else SLURM's, else (0, 1, 0)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env and int(env["SLURM_NTASKS"]) > 1:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def _slurm_master(env) -> tuple[str, str]:
    nodes = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
    try:  # scontrol expands compressed node lists like "gpu[01-04]"
        host = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True,
                              text=True, check=True).stdout.split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        host = nodes.split(",")[0].split("[")[0]
    port = str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000)
    return host, port


def init_distributed(device: str = "cpu") -> DistContext:
    """Initialise the default process group if the environment asks for several processes.

    `device` is the preset's device ("cuda" or "cpu"); on CUDA each process takes GPU
    `local_rank`. Returns a `DistContext` (single-process when no launcher is detected).
    """
    rank, world, local = env_rank_info()
    use_cuda = device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available "
                           "(use the small preset, or run on a GPU node)")
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            host, port = _slurm_master(os.environ)
            os.environ.setdefault("MASTER_ADDR", host)
            os.environ.setdefault("MASTER_PORT", port)
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    return DistContext(rank, world, local, dev)


def cleanup_distributed() -> None:
    """Destroy the process group if one was created."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_any(flag: bool, ctx: DistContext) -> bool:
    """True if `flag` is true on any rank (so every rank stops together)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op in a single process)."""
    if ctx.distributed:
        dist.barrier()
