"""Deterministic data order: which sample each rank reads at each iteration.

The training data is an endless stream: sample `k` of the stream is item
`perm_e[k % N]` of the dataset, where `perm_e` is a permutation drawn from
(seed, epoch e = k // N). Iteration `i` consumes stream samples
`i*G .. (i+1)*G - 1` for a global batch G; micro-step `a` of rank `r` reads the
`micro` samples starting at `i*G + (a*world + r)*micro`. So the data order, and each
sample's augmentation (seeded by (seed, k)), is a pure function of (seed, iteration):
a resumed run reads exactly what an uninterrupted one would, and a run on 2 processes
sees the same global batch as a run on 1 process with twice the accumulation.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch.utils.data import Dataset, Sampler

# Large odd constants mix (seed, k) into one 63-bit seed without collisions in practice.
_MIX_A, _MIX_B = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9


def mix_seed(*parts: int) -> int:
    """A 63-bit seed deterministically derived from integer parts."""
    h = 0
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * _MIX_A + _MIX_B) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class SampleStream(Dataset):
    """Endless, seeded view of `dataset`: item k = transform(dataset[perm_{k//N}[k % N]]).

    The transform runs under a torch RNG forked and seeded from (seed, k), so an
    augmentation does not depend on the process, the worker or what ran before.
    """

    def __init__(self, dataset: Dataset, seed: int, transform: Callable | None = None):
        self.dataset, self.seed, self.transform = dataset, seed, transform
        self.n = len(dataset)
        if self.n == 0:
            raise ValueError("the training dataset is empty")
        self._perm_epoch, self._perm = -1, None

    def index_of(self, k: int) -> int:
        """Dataset index of stream sample k."""
        epoch = k // self.n
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g).tolist(), epoch
        return self._perm[k % self.n]

    def __len__(self) -> int:  # nominal; the stream is endless and indexed by the sampler
        return self.n

    def __getitem__(self, k: int):
        item = self.dataset[self.index_of(k)]
        if self.transform is None:
            return item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(self.seed, k, 0xA06))
            return self.transform(item)


class MicroBatchSampler(Sampler[list[int]]):
    """Yields this rank's micro-batches (lists of stream indices) from `start_iteration` on."""

    def __init__(self, start_iteration: int, iterations: int, global_batch: int, micro_batch: int,
                 rank: int = 0, world_size: int = 1):
        self.start, self.iterations = start_iteration, iterations
        self.global_batch, self.micro, self.rank, self.world = global_batch, micro_batch, rank, world_size
        self.accumulation = accumulation_steps(global_batch, micro_batch, world_size)

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(self.start, self.iterations):
            for a in range(self.accumulation):
                first = i * self.global_batch + (a * self.world + self.rank) * self.micro
                yield list(range(first, first + self.micro))

    def __len__(self) -> int:
        return (self.iterations - self.start) * self.accumulation


def accumulation_steps(global_batch: int, micro_batch: int, world_size: int) -> int:
    """Gradient-accumulation steps so that world_size x micro_batch x steps == global_batch."""
    per_step = micro_batch * world_size
    if micro_batch < 1 or global_batch % per_step:
        raise ValueError(f"train.batch_size {global_batch} is not a multiple of micro_batch_size "
                         f"{micro_batch} x world size {world_size}; choose a micro batch that divides it")
    return global_batch // per_step
