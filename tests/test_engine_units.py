"""Engine helpers checked against hand-computed references: inference resizing, chunked
semantic argmax, prediction files, rank discovery, loss log resume, progress lines."""
from __future__ import annotations

import csv
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from fisa.engine.distributed import env_rank_info
from fisa.engine.inference import referring_masks, resize_for_inference, semantic_argmax
from fisa.engine.progress import LossLog, Progress


@pytest.mark.parametrize("hw,expected", [
    ((512, 683), (800, 1067)),     # ADE-like: shorter side to 800
    ((480, 1280), (500, 1333)),    # panorama: longer side capped at 1333 -> 480 * 1333/1280
    ((800, 800), (800, 800)),
])
def test_resize_shorter_side_800_longer_1333(hw, expected):
    img = torch.zeros(3, *hw, dtype=torch.uint8)
    out = resize_for_inference(img, 800, 1333)
    assert tuple(out.shape[-2:]) == expected and out.dtype == torch.float32


def test_semantic_argmax_chunked_equals_full():
    g = torch.Generator().manual_seed(0)
    masks = torch.randn(7, 9, 11, generator=g)
    for c in (5, 300):  # below and above the chunk size
        logits = torch.randn(7, c + 1, generator=g)
        probs = logits.softmax(-1)[:, :-1]
        reference = torch.einsum("qc,qhw->chw", probs, masks.sigmoid()).argmax(0)
        assert torch.equal(semantic_argmax(masks, logits), reference)


class _StubModel:
    """Two proposals; expression 'left' matches proposal 0, 'right' proposal 1."""

    def encode_vocabulary(self, names):
        table = {"left": [1.0, 0.0], "right": [0.0, 1.0]}
        return torch.tensor([table[n[0]] for n in names])

    def __call__(self, images, vocabulary, **kw):
        h, w = images.shape[-2:]
        m = torch.full((1, 2, h, w), -5.0)
        m[0, 0, :, : w // 2] = 5.0
        m[0, 1, :, w // 2:] = 5.0
        region = torch.eye(2)[None]  # [1, Q, D]
        logits = region @ vocabulary.T
        return {"mask_logits": m, "class_logits": torch.cat([logits, torch.zeros(1, 2, 1)], -1)}


def test_referring_picks_best_scoring_proposal_at_original_size():
    img = torch.zeros(3, 20, 40, dtype=torch.uint8)
    masks = referring_masks(_StubModel(), img, ["right", "left"], 40, 80)
    assert masks.shape == (2, 20, 40)
    assert masks[0, :, 20:].all() and not masks[0, :, :20].any()
    assert masks[1, :, :20].all() and not masks[1, :, 20:].any()


def test_semantic_png_is_16_bit_above_255_classes(tmp_path):
    from fisa.engine.evaluate import write_semantic_png

    labels = np.array([[0, 300], [846, 5]])
    write_semantic_png(tmp_path / "a.png", labels, 847)
    back = np.array(Image.open(tmp_path / "a.png"))
    assert back.dtype == np.uint16 and (back == labels).all()
    write_semantic_png(tmp_path / "b.png", np.array([[0, 149]]), 150)
    back = np.array(Image.open(tmp_path / "b.png"))
    assert back.dtype == np.uint8 and back.tolist() == [[0, 149]]


def test_rank_info_from_torchrun_slurm_or_nothing():
    assert env_rank_info({}) == (0, 1, 0)
    assert env_rank_info({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == (3, 8, 1)
    assert env_rank_info({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}) == (5, 8, 1)
    # a single-task SLURM job (the usual `sbatch python ...`) is not distributed
    assert env_rank_info({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == (0, 1, 0)
    # torchrun inside a SLURM allocation: torchrun's variables win
    assert env_rank_info({"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == (1, 2, 0)


def test_loss_log_drops_rows_after_resume_point(tmp_path):
    path = tmp_path / "losses.csv"
    log = LossLog(path, tensorboard=False)
    for i in range(6):
        log.write(i, {"loss": float(i)}, 0.1, 0.5, grad_norm=2.0 * i)
    log.close()
    log = LossLog(path, resume_iteration=4, tensorboard=False)
    log.write(4, {"loss": 40.0}, 0.1, 0.5, grad_norm=3.0)
    log.close()
    rows = list(csv.DictReader(open(path)))
    assert [int(r["iteration"]) for r in rows] == [0, 1, 2, 3, 4]
    assert float(rows[-1]["loss"]) == 40.0 and list(rows[0]) == ["iteration", "lr", "grad_norm", "seconds", "loss"]
    assert [float(r["grad_norm"]) for r in rows] == [0.0, 2.0, 4.0, 6.0, 3.0]


def test_progress_without_terminal_logs_every_n(caplog):
    caplog.set_level(logging.INFO, logger="fisa.train")
    p = Progress(total=10, log_every=4, use_bar=False)
    for i in range(10):
        p.update(i, {"loss": 1.5}, 1e-4)
    lines = [r.getMessage() for r in caplog.records if r.name == "fisa.train"]
    assert len(lines) == 3  # iterations 4, 8 and the last
    assert lines[0].startswith("iter 4/10 loss=1.5000 lr=1.000e-04") and "it/s" in lines[0]
    assert lines[-1].startswith("iter 10/10")


def test_attempt_log_heartbeat_and_killed_attempt(tmp_path, monkeypatch):
    import json

    from fisa.engine import train as T
    from fisa.engine.distributed import DistContext

    clock = [100.0]
    monkeypatch.setattr(T.time, "perf_counter", lambda: clock[0])
    prov = {"started": "t", "device": "cpu", "world_size": 2}
    running, prov_path = tmp_path / T.AttemptLog.RUNNING, tmp_path / "provenance.json"

    killed = T.AttemptLog(tmp_path, dict(prov), DistContext(world_size=2), heartbeat_seconds=60)
    killed.begin()
    assert json.loads(running.read_text())["wall_seconds"] == 0.0
    clock[0] = 130.0
    killed.heartbeat(3)  # neither due by time nor a checkpoint: not written
    assert json.loads(running.read_text())["wall_seconds"] == 0.0
    killed.heartbeat(10, checkpointed=True)
    beat = json.loads(running.read_text())
    assert (beat["wall_seconds"], beat["iteration"], beat["outcome"]) == (30.0, 10, "running")
    clock[0] = 200.0
    killed.heartbeat(11)  # 70 s since the last beat
    assert json.loads(running.read_text())["wall_seconds"] == 100.0
    clock[0] = 250.0  # ... then SIGKILL: 50 s after the last beat are lost, nothing else is written
    assert not prov_path.exists()

    nxt = T.AttemptLog(tmp_path, dict(prov), DistContext(world_size=2))
    nxt.begin()
    assert json.loads(prov_path.read_text())["attempts"][0]["outcome"].startswith("killed")
    clock[0] = 262.0
    nxt.resumed_from = 10
    nxt.end("finished", iterations=20)
    p = json.loads(prov_path.read_text())
    assert [(a["outcome"].split()[0], a["wall_seconds"], a["resumed_from"]) for a in p["attempts"]] == [
        ("killed", 100.0, None), ("finished", 12.0, 10)]
    assert p["wall_seconds"] == 112.0 and p["gpu_hours"] == round(112.0 * 2 / 3600, 6)
    assert p["iterations"] == 20 and not running.exists()
