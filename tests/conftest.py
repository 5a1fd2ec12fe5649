"""Suite-wide pytest settings: the order in which test files are handed to pytest-xdist workers.

CI runs `pytest -q` with `-n auto --dist loadfile` (pyproject.toml): each test file goes whole
to one worker (one per core plus one, see below), so its module-scoped fixtures (a trained tiny
run, a prepared dataset) are still built once. Files are handed out in collection order; the longest ones go
first, so that no long file starts last and runs alone while the other worker idles.
"""
from __future__ import annotations

import os

# The workers share the cores: each worker and the programs its tests start use one thread
# (torch's default of one thread per core would run 2 threads per worker and spin-wait).
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Slowest files first (measured with --durations on 2 cores; the SLURM file mostly waits on
# job submission and status polling, so it overlaps well with the CPU-bound ones).
LONGEST_FIRST = (
    "test_workflow_slurm.py",
    "test_engine_pipeline.py",
    "test_bench_rehearse.py",
    "test_engine_real.py",
    "test_workflow.py",
    "test_pretrain_clip.py",
    "test_workflow_inputs.py",
    "test_eval_oracle.py",
    "test_prepare.py",
    "test_engine_rerun.py",
    "test_readme_commands.py",
)


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core plus one. The SLURM file's worker spends most of its ~5 min
    waiting on job submission and status polling (CI's CPU use was ~140 % of 200 % with one
    worker per core), so a third worker keeps both cores busy meanwhile."""
    return (os.cpu_count() or 1) + 1


def pytest_collection_modifyitems(config, items):
    """Stable sort: the files of LONGEST_FIRST in that order, then every other file as collected."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
