"""Referring segmentation metrics: hand case, reference on random masks, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fisa.metrics.referring import ReferringEvaluator, main
from reference_metrics import referring_reference


def test_hand_computed_case():
    ev = ReferringEvaluator()
    gt = np.zeros((4, 4), bool)
    gt[:2, :] = True  # 8 pixels
    assert ev.process(gt, gt) == 1.0  # I 8, U 8
    pred = np.zeros((4, 4), bool)
    pred[:1, :] = True
    assert ev.process(pred, gt) == pytest.approx(0.5)  # I 4, U 8
    pred = np.zeros((4, 4), bool)
    pred[1:3, :] = True
    assert ev.process(pred, gt) == pytest.approx(4 / 12)  # I 4, U 12
    r = ev.evaluate()
    assert r["mIoU"] == pytest.approx(100 * (1 + 0.5 + 1 / 3) / 3)
    assert r["oIoU"] == pytest.approx(100 * 16 / 28)  # cumulative: sum I / sum U
    assert r["P@0.5"] == pytest.approx(200 / 3)  # IoU >= 0.5 counts
    assert r["P@0.6"] == r["P@0.9"] == pytest.approx(100 / 3)
    assert set(r) == {"mIoU", "oIoU", "P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9"}
    assert ev.num_expressions == 3


def test_random_cases_match_reference():
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(30):
        gt = rng.random((16, 20)) < rng.uniform(0.05, 0.6)
        pred = np.where(rng.random(gt.shape) < rng.uniform(0, 0.6), ~gt, gt)
        pairs.append((pred, gt))
    pairs.append((np.zeros((3, 3), bool), np.zeros((3, 3), bool)))  # both empty: IoU 1
    ev = ReferringEvaluator()
    for p, g in pairs:
        ev.process(p.astype(np.uint8), g)
    got, ref = ev.evaluate(), referring_reference(pairs)
    for key, value in ref.items():
        assert abs(got[key] - value) <= 1e-9, key
    other = ReferringEvaluator()
    other.merge(ev)
    assert other.evaluate() == got


def test_errors():
    ev = ReferringEvaluator()
    with pytest.raises(ValueError, match="no expression"):
        ev.evaluate()
    with pytest.raises(ValueError, match=r"shape \(2, 2\) != ground truth mask shape \(2, 3\) for ref_4"):
        ev.process(np.zeros((2, 2)), np.zeros((2, 3)), name="ref_4")


def test_cli(tmp_path, capsys):
    rng = np.random.default_rng(3)
    pairs = []
    for i in range(5):
        gt = rng.random((12, 12)) < 0.4
        pred = np.where(rng.random(gt.shape) < 0.3, ~gt, gt)
        for sub, mask in (("gt", gt), ("pred", pred)):
            (tmp_path / sub).mkdir(exist_ok=True)
            Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / sub / f"ref_{i}.png")
        pairs.append((pred, gt))
    out = tmp_path / "r.json"
    args = ["--gt-dir", str(tmp_path / "gt"), "--pred-dir", str(tmp_path / "pred"), "--output", str(out)]
    assert main(args) == 0
    data = json.loads(out.read_text())
    assert data["num_expressions"] == 5
    assert data["oIoU"] == pytest.approx(referring_reference(pairs)["oIoU"], abs=1e-9)
    out.unlink()
    (tmp_path / "pred" / "ref_3.png").unlink()
    assert main(args) == 1
    assert str(tmp_path / "gt" / "ref_3.png") in capsys.readouterr().err and not out.exists()


def test_protocol_mask_samples_pixel_centres_on_the_480_grid():
    from fisa.metrics.referring import protocol_mask

    rng = np.random.default_rng(1)
    m = rng.random((960, 960)) < 0.5
    # PIL NEAREST (LAVT's target resize) takes source pixel floor((i + 0.5) * 960 / 480) = 2i + 1
    assert np.array_equal(protocol_mask(m, 480), m[1::2, 1::2])
    small = np.array([[1, 0], [0, 1]], bool)
    assert np.array_equal(protocol_mask(small, 4), np.kron(small, np.ones((2, 2), bool)))
    assert protocol_mask(small.astype(np.uint8), None).dtype == bool
    # both masks on the protocol's grid: a 2x3 pair of different shapes becomes comparable
    ev = ReferringEvaluator()
    gt = np.zeros((6, 3), bool)
    gt[:3] = True
    pred = np.zeros((6, 3), bool)
    pred[:, :] = True
    ev.process(protocol_mask(pred, 4), protocol_mask(gt, 4))
    assert ev.evaluate()["oIoU"] == pytest.approx(50.0)
