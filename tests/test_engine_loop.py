"""The training loop's guarantees on a stand-in model: exact resume after SIGKILL and
SIGTERM, NaN detection, corrupted-checkpoint fallback, DDP == 1 process, batch arithmetic."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fisa.engine.checkpoint import CheckpointManager
from fisa.engine.loop import PREEMPTED_EXIT_CODE, NonFiniteLossError
from fisa.engine.sampling import MicroBatchSampler, SampleStream, accumulation_steps

from test_engine_standin import Points, run

HERE = Path(__file__).parent
SCRIPT = HERE / "test_engine_standin.py"


def _script(out, *args, env=None):
    e = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE), **(env or {})}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        if env is None or k not in env:
            e.pop(k, None)
    return subprocess.Popen([sys.executable, str(SCRIPT), str(out), *map(str, args)], env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _initial():
    from test_engine_standin import build

    return build(0, 0.0)[0].state_dict()


def _final(out):
    return torch.load(Path(out) / "final.pt")


def _assert_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    run(out)
    return _final(out)


def test_sigkill_then_restart_is_bit_identical(tmp_path, reference):
    p = _script(tmp_path, "--kill-at", 6)
    p.wait(timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stdout.read()
    assert not (tmp_path / "final.pt").exists()
    assert [i for i, _ in CheckpointManager(tmp_path / "checkpoints").list()] == [4]
    p = _script(tmp_path)
    out = p.communicate(timeout=120)[0]
    assert p.returncode == 0, out
    assert "resuming from" in out and "iteration 4 of 12" in out
    _assert_equal(_final(tmp_path), reference)
    # the loss log has each iteration once, in order, despite the redone iterations 4 and 5
    rows = (tmp_path / "losses.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(12))


def test_sigterm_checkpoints_and_exits_for_requeue(tmp_path, reference):
    p = _script(tmp_path, "--term-at", 5)
    out = p.communicate(timeout=120)[0]
    assert p.returncode == PREEMPTED_EXIT_CODE, out
    assert "SIGTERM" in out
    # checkpoint written right after the interrupted iteration 5 (= 6 done), beside the periodic one
    assert [i for i, _ in CheckpointManager(tmp_path / "checkpoints").list()] == [4, 6]
    run(tmp_path)
    _assert_equal(_final(tmp_path), reference)


def test_nan_loss_stops_with_iteration_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"iteration 5 .*last good checkpoint: .*ckpt_00000004\.pt"):
        run(tmp_path, nan_at=5)
    mgr = CheckpointManager(tmp_path / "checkpoints")
    assert [i for i, _ in mgr.list()] == [4]
    assert mgr.verify(mgr.path_for(4)) is None
    assert mgr.latest_valid()[0] == 4


@pytest.mark.parametrize("damage", ["flip", "truncate", "no_sidecar"])
def test_corrupted_latest_checkpoint_falls_back_to_previous(tmp_path, reference, damage, caplog):
    run(tmp_path)  # keeps checkpoints 8 and 12
    (tmp_path / "final.pt").unlink()
    mgr = CheckpointManager(tmp_path / "checkpoints")
    latest = mgr.path_for(12)
    data = bytearray(latest.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        latest.write_bytes(bytes(data))
    elif damage == "truncate":
        latest.write_bytes(bytes(data[: len(data) // 3]))
    else:
        latest.with_suffix(".json").unlink()
    it, path, _ = mgr.latest_valid()
    assert (it, path) == (8, mgr.path_for(8))
    assert "skipping corrupted checkpoint" in caplog.text and "ckpt_00000012.pt" in caplog.text
    # resuming from 8 gives the same weights as never stopping
    _, res = run(tmp_path)
    assert res.resumed_from == 8
    _assert_equal(_final(tmp_path), reference)


def test_rotation_keeps_newest(tmp_path):
    run(tmp_path, iterations=12, checkpoint_every=2, keep=2)
    assert [i for i, _ in CheckpointManager(tmp_path / "checkpoints").list()] == [10, 12]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_ddp_matches_one_process(tmp_path):
    """2 ranks x micro-batch 2 (no accumulation) == 1 rank x micro-batch 2 x 2 accumulation steps.

    Without dropout (whose masks differ per rank by design) the two are the same computation
    up to the order of float additions."""
    run(tmp_path / "one", dropout=0.0)
    reference = _final(tmp_path / "one")
    out = tmp_path / "ddp"
    port = str(_free_port())
    procs = [_script(out, "--dropout", 0, env={"RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r),
                               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}) for r in range(2)]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    ddp = _final(out)
    assert ddp.keys() == reference.keys()
    for k in ddp:
        assert torch.allclose(ddp[k], reference[k], rtol=1e-5, atol=1e-6), k
    assert torch.equal(ddp["frozen.weight"], reference["frozen.weight"])
    # and the head did move (the comparison is not between two untrained models)
    assert not torch.allclose(ddp["head.2.weight"], _initial()["head.2.weight"], atol=1e-3)


def test_accumulation_arithmetic_and_errors():
    assert accumulation_steps(16, 2, 4) == 2
    assert accumulation_steps(16, 4, 4) == 1
    with pytest.raises(ValueError, match="batch_size 16 .* micro_batch_size 3 x world size 2"):
        accumulation_steps(16, 3, 2)


def test_ranks_and_accumulation_partition_the_global_batch():
    """Every iteration's global batch is the same set of stream samples whatever the split."""
    one = list(MicroBatchSampler(0, 3, 8, 2, 0, 1))
    two = [list(MicroBatchSampler(0, 3, 8, 2, r, 2)) for r in range(2)]
    for i in range(3):
        a = sorted(sum(one[i * 4:(i + 1) * 4], []))
        b = sorted(sum(two[0][i * 2:(i + 1) * 2] + two[1][i * 2:(i + 1) * 2], []))
        assert a == b == list(range(8 * i, 8 * (i + 1)))
    # resuming at iteration 2 yields exactly the tail of the full order
    assert list(MicroBatchSampler(2, 3, 8, 2, 0, 1)) == one[8:]


def test_stream_covers_each_epoch_once_and_augmentation_is_seeded():
    ds = Points(n=5)
    s = SampleStream(ds, seed=3, transform=lambda d: {"x": torch.rand(1)})
    assert sorted(s.index_of(k) for k in range(5)) == list(range(5))
    assert sorted(s.index_of(k) for k in range(5, 10)) == list(range(5))
    assert [s.index_of(k) for k in range(5)] != [s.index_of(k) for k in range(5, 10)]
    torch.manual_seed(0)
    a = s[7]["x"]
    torch.rand(100)  # whatever ran before must not matter
    assert torch.equal(s[7]["x"], a) and not torch.equal(s[8]["x"], a)
