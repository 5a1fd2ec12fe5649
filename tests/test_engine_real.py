"""The real FISA (small preset, tiny schedule) through the real training entry point: 2-process
gloo DDP equals one process on the same global batch; exact resume with DataLoader workers;
bf16 autocast on CPU resumes to the uninterrupted run's state. (The stand-in model's versions
of these guarantees are in tests/test_engine_loop.py.)"""
from __future__ import annotations

import shutil
import socket
import subprocess

import pytest
import torch

from fisa.config import load_config, resolve_experiment
from fisa.engine.train import train

from real_engine import engine_env, prepare_tiny_inputs, train_command, train_overrides

pytestmark = pytest.mark.slow
ITERATIONS = 6


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    torch.set_num_threads(1)
    return prepare_tiny_inputs(tmp_path_factory.mktemp("real"))


def _resolved(inputs, **train):
    config = load_config(overrides=train_overrides(inputs, ITERATIONS, **train))
    return resolve_experiment(config, "fisa", "small", seed=0)


def _final(out):
    return torch.load(out / "model_final.pt", weights_only=False)["model"]


def _assert_equal(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different


def _interrupted_then_resumed(r, out, at: int):
    """Train to the end, then roll the folder back to its checkpoint of iteration `at` (as if
    killed just after it) and train again: it resumes from there."""
    train(r, out, progress_bar=False)
    for f in ("done.json", "model_final.pt"):
        (out / f).unlink()
    for ckpt in (out / "checkpoints").glob("ckpt_*"):
        if int(ckpt.name.split("_")[1].split(".")[0]) > at:
            ckpt.unlink()
    train(r, out, progress_bar=False)
    return _final(out)


@pytest.fixture(scope="module")
def fp32_reference(inputs, tmp_path_factory):
    """Uninterrupted, fp32, no DataLoader workers."""
    out = tmp_path_factory.mktemp("fp32")
    train(_resolved(inputs, num_workers=0, checkpoint_every=3), out, progress_bar=False)
    return _final(out)


def test_resume_with_dataloader_workers_is_bit_exact(inputs, fp32_reference, tmp_path):
    """num_workers=2: the data a worker yields is a function of (seed, iteration) only, so the
    resumed run equals the uninterrupted run without workers, bit for bit."""
    r = _resolved(inputs, num_workers=2, checkpoint_every=3)
    assert r["train"]["num_workers"] == 2
    _assert_equal(_interrupted_then_resumed(r, tmp_path / "w2", at=3), fp32_reference)


def test_bf16_autocast_on_cpu_resumes_to_the_uninterrupted_state(inputs, fp32_reference, tmp_path):
    r = _resolved(inputs, num_workers=0, checkpoint_every=3, precision="bf16")
    train(r, tmp_path / "straight", progress_bar=False)
    straight = _final(tmp_path / "straight")
    _assert_equal(_interrupted_then_resumed(r, tmp_path / "resumed", at=3), straight)
    # the run really was bf16: CPU autocast is honoured (fisa.engine.precision), never a silent fp32
    assert not all(torch.equal(straight[k], fp32_reference[k]) for k in straight), \
        "train.precision bf16 gave the fp32 weights bit for bit: autocast did not run"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_ddp_of_fisa_equals_one_process(inputs, tmp_path):
    """2 ranks x micro-batch 2 == 1 process x micro-batch 2 x 2 accumulation steps (global
    batch 4): the same computation up to the order of float additions."""
    # the dense criterion: the point criterion draws its points from each process's own RNG, so
    # 2 ranks and 1 process x 2 micro-batches sample different points (as Mask2Former's DDP does)
    dense = {"type": "dense"}
    r = _resolved(inputs, num_workers=0, checkpoint_every=1000, criterion=dense)
    train(r, tmp_path / "one", micro_batch=2, progress_bar=False)
    one = _final(tmp_path / "one")
    port = str(_free_port())
    procs = [subprocess.Popen(train_command(inputs, tmp_path / "ddp", ITERATIONS, num_workers=0, checkpoint_every=1000,
                                            criterion=dense),
                              env=engine_env(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                                             MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[-3000:] for o in outs]
    ddp = _final(tmp_path / "ddp")
    import json

    assert json.loads((tmp_path / "ddp" / "provenance.json").read_text())["world_size"] == 2
    assert ddp.keys() == one.keys()
    for k in ddp:
        torch.testing.assert_close(ddp[k], one[k], rtol=1e-4, atol=1e-5, msg=k)
    # the weights did move: the comparison is not between two untrained models
    from fisa.engine.run_model import build_run_model
    from fisa.engine.loop import trainable_state_dict

    initial = trainable_state_dict(build_run_model(r))
    moved = [k for k in one if one[k].is_floating_point() and not torch.allclose(one[k], initial[k], atol=1e-4)]
    assert len(moved) > len(one) // 2, moved
