"""mIoU family: hand-computed cases, the fc-clip #27 rule, a per-class reference, merging, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from fisa.metrics.semantic import SemSegEvaluator, main, read_label_map
from fisa.metrics.synthetic import random_semantic_pair
from reference_metrics import miou_reference


def test_hand_computed_case():
    gt = np.array([[0, 0, 1, 255], [0, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 2], [0, 2, 0, 0]])
    ev = SemSegEvaluator(3, 255)
    ev.process(pred, gt)
    r = ev.evaluate()
    # class 0: tp 2, gt 3, pred 3 -> 2/4; class 1: tp 1, gt 1, pred 2 -> 1/2; class 2: tp 1, gt 2, pred 1 -> 1/2
    # (the class-2 prediction on an ignore pixel counts for nothing: 1/3 if it did)
    assert r["IoU"] == pytest.approx([50.0, 50.0, 50.0])
    assert r["ACC"] == pytest.approx([200 / 3, 100.0, 50.0])
    assert r["mIoU"] == pytest.approx(50.0)
    assert r["fwIoU"] == pytest.approx(50.0)
    assert r["mACC"] == pytest.approx((200 / 3 + 100 + 50) / 3)
    assert r["pACC"] == pytest.approx(400 / 6)
    assert ev.confusion_matrix.dtype == np.int64 and ev.confusion_matrix.sum() == gt.size


def test_class_only_predicted_fc_clip_issue_27():
    """Current detectron2 averages over classes with GT pixels; the old NaN rule also over predicted ones."""
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 2, 1, 1]])
    ev = SemSegEvaluator(4, 255)
    ev.process(pred, gt)
    r = ev.evaluate()
    assert r["IoU"] == [50.0, 100.0, None, None]  # class 2 only predicted, class 3 nowhere: undefined
    assert r["mIoU"] == pytest.approx(75.0)
    # the pre-2022 rule (and torchmetrics' MulticlassJaccardIndex): IoU 0 for class 2 enters the mean
    cm = ev.confusion_matrix[:-1, :-1]
    tp, union = np.diag(cm), cm.sum(0) + cm.sum(1) - np.diag(cm)
    old_rule = 100 * np.mean(tp[union > 0] / union[union > 0])
    assert old_rule == pytest.approx(50.0)
    assert r["mIoU"] != pytest.approx(old_rule)
    assert r["mIoU_gt_classes"] == pytest.approx(75.0) and r["mIoU_gt_or_pred_classes"] == pytest.approx(50.0)


def test_both_detectron2_rules_from_one_matrix_hand_computed():
    """Two classes predicted but absent from the GT, one predicted only on ignore pixels.

    Valid pixels (GT != 255): gt0/p0, gt0/p3, gt1/p1, gt1/p1, gt1/p4. Class 0: I 1, U 2 -> 1/2;
    class 1: I 2, U 3 -> 2/3; classes 3 and 4 only predicted; class 2 predicted only where the
    GT is ignored (not counted at all). Since detectron2 f3c1bc1: (1/2 + 2/3) / 2 = 7/12;
    up to v0.6: (1/2 + 2/3) / 4 (classes 0, 1, 3, 4 have GT or prediction) = 7/24.
    """
    gt = np.array([[0, 0, 1, 255], [1, 1, 255, 255]])
    pred = np.array([[0, 3, 1, 2], [1, 4, 0, 4]])
    ev = SemSegEvaluator(5, 255)
    ev.process(pred, gt)
    r = ev.evaluate()
    assert r["mIoU_gt_classes"] == pytest.approx(100 * 7 / 12)
    assert r["mIoU_gt_or_pred_classes"] == pytest.approx(100 * 7 / 24)
    assert r["mIoU"] == r["mIoU_gt_classes"]
    assert r["mIoU_gt_classes"] - r["mIoU_gt_or_pred_classes"] == pytest.approx(100 * 7 / 24)
    # without a class only predicted the two rules agree
    ev2 = SemSegEvaluator(5, 255)
    ev2.process(np.array([[0, 1, 1, 2]]), np.array([[0, 0, 1, 255]]))
    r2 = ev2.evaluate()
    assert r2["mIoU_gt_classes"] == pytest.approx(r2["mIoU_gt_or_pred_classes"]) == pytest.approx(100 * (1 / 2 + 1 / 2) / 2)


@pytest.mark.parametrize("num_classes,ignore_label", [(3, 255), (7, 255), (12, 65535), (5, -1)])
def test_random_cases_match_per_class_reference(num_classes, ignore_label):
    rng = np.random.default_rng(num_classes)
    pairs = [random_semantic_pair(rng, num_classes, ignore_label) for _ in range(6)]
    pairs[1][0][:4, :4] = ignore_label  # predicted "no class": a miss, never a prediction
    ev = SemSegEvaluator(num_classes, ignore_label)
    for pred, gt in pairs:
        ev.process(pred, gt)
    got, ref = ev.evaluate(), miou_reference(pairs, num_classes, ignore_label)
    for key in ("mIoU", "fwIoU", "mACC", "pACC"):
        assert abs(got[key] - ref[key]) <= 1e-9, key
    assert [v is None for v in got["IoU"]] == [v is None for v in ref["IoU"]]
    assert any(v is None for v in got["IoU"]) or num_classes == 3  # classes in neither / only predicted
    for a, b in zip(got["IoU"], ref["IoU"]):
        assert a is None or abs(a - b) <= 1e-9


def test_merge_is_the_sum_of_confusion_matrices():
    rng = np.random.default_rng(0)
    pairs = [random_semantic_pair(rng, 6, 255) for _ in range(4)]
    whole, rank0, rank1 = (SemSegEvaluator(6, 255) for _ in range(3))
    for i, (p, g) in enumerate(pairs):
        whole.process(p, g)
        (rank0 if i % 2 else rank1).process(p, g)
    rank0.merge(rank1)
    np.testing.assert_array_equal(rank0.confusion_matrix, whole.confusion_matrix)
    assert rank0.evaluate() == whole.evaluate()
    merged = SemSegEvaluator(6, 255)
    merged.merge(whole.confusion_matrix)  # e.g. after a torch.distributed all_reduce
    assert merged.evaluate() == whole.evaluate()
    with pytest.raises(ValueError, match="cannot merge a"):
        merged.merge(np.zeros((3, 3)))
    merged.reset()
    assert merged.confusion_matrix.sum() == 0


def test_input_errors():
    ev = SemSegEvaluator(3, 255)
    with pytest.raises(ValueError, match=r"shape \(2, 3\) != ground truth shape \(2, 2\) for img_7.png"):
        ev.process(np.zeros((2, 3), int), np.zeros((2, 2), int), name="img_7.png")
    with pytest.raises(ValueError, match="ground truth labels in a.png contain 3, outside 0..2 and not the ignore label 255"):
        ev.process(np.zeros((2, 2), int), np.array([[0, 3], [255, 1]]), name="a.png")
    with pytest.raises(ValueError, match="prediction labels contain -2"):
        ev.process(np.array([[0, -2]]), np.array([[0, 1]]))
    with pytest.raises(ValueError, match="must be integers"):
        ev.process(np.zeros((1, 2), float), np.array([[0, 1]]))
    with pytest.raises(ValueError, match="no ground-truth pixel"):
        ev.evaluate()
    ev.process(np.array([[0, 1]]), np.array([[255, 255]]))
    with pytest.raises(ValueError, match="no ground-truth pixel"):
        ev.evaluate()
    with pytest.raises(ValueError, match="ignore_label 2 is a valid class id"):
        SemSegEvaluator(3, 2)


def test_dtypes_give_the_same_result():
    rng = np.random.default_rng(4)
    pred, gt = random_semantic_pair(rng, 2, 255, height=16, width=16)
    results = []
    for dtype in (np.uint8, np.uint16, np.int32, np.int64):
        ev = SemSegEvaluator(2, 255)
        ev.process(pred.astype(dtype), gt.astype(dtype))
        results.append(ev.evaluate())
    ev = SemSegEvaluator(2, 255)
    ev.process(pred.astype(bool), gt.astype(np.uint8))  # a binary prediction as a bool map
    results.append(ev.evaluate())
    assert all(r == results[0] for r in results)


def test_accepts_torch_tensors():
    import torch

    ev = SemSegEvaluator(3, 255)
    ev.process(torch.tensor([[0, 1], [2, 2]]), torch.tensor([[0, 1], [2, 255]], dtype=torch.uint8))
    assert ev.evaluate()["mIoU"] == pytest.approx(100.0)


# ---- CLI: files matched by name, PNG / TIFF, 8- / 16-bit


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".tif":
        tifffile.imwrite(path, arr)
    else:
        Image.fromarray(arr).save(path)


def _folders(tmp_path, num_classes, ignore_label, dtype, gt_suffix=".png", pred_suffix=".png", n=4):
    rng = np.random.default_rng(1)
    pairs = []
    for i in range(n):
        pred, gt = random_semantic_pair(rng, num_classes, ignore_label, height=24, width=32)
        _save(tmp_path / "gt" / f"img_{i}{gt_suffix}", gt.astype(dtype))
        _save(tmp_path / "pred" / f"img_{i}{pred_suffix}", pred.astype(dtype))
        pairs.append((pred, gt))
    return pairs


def _cli(tmp_path, num_classes, ignore_label, capsys):
    out = tmp_path / "out.json"
    rc = main(["--gt-dir", str(tmp_path / "gt"), "--pred-dir", str(tmp_path / "pred"), "--num-classes",
               str(num_classes), "--ignore-label", str(ignore_label), "--output", str(out)])
    return rc, capsys.readouterr().err, out


@pytest.mark.parametrize("num_classes,ignore_label,dtype,gt_suffix,pred_suffix", [
    (6, 255, np.uint8, ".png", ".png"),
    (300, 65535, np.uint16, ".png", ".png"),
    (300, 65535, np.uint16, ".tif", ".png"),
    (6, 255, np.uint8, ".tif", ".tif"),
])
def test_cli_matches_files_and_reference(tmp_path, capsys, num_classes, ignore_label, dtype, gt_suffix, pred_suffix):
    pairs = _folders(tmp_path, num_classes, ignore_label, dtype, gt_suffix, pred_suffix)
    _save(tmp_path / "pred" / "extra.png", np.zeros((24, 32), dtype))  # a prediction without GT: ignored
    rc, err, out = _cli(tmp_path, num_classes, ignore_label, capsys)
    assert rc == 0, err
    data = json.loads(out.read_text())
    ref = miou_reference(pairs, num_classes, ignore_label)
    assert data["num_images"] == 4
    assert data["mIoU"] == pytest.approx(ref["mIoU"], abs=1e-9)
    assert data["pACC"] == pytest.approx(ref["pACC"], abs=1e-9)
    assert len(data["IoU"]) == num_classes and data["IoU"][-1] is None


def test_read_label_map_keeps_16_bit_values(tmp_path):
    arr = np.array([[0, 300], [65535, 1000]], dtype=np.uint16)
    _save(tmp_path / "a.png", arr)
    _save(tmp_path / "a.tif", arr)
    np.testing.assert_array_equal(read_label_map(tmp_path / "a.png"), arr)
    np.testing.assert_array_equal(read_label_map(tmp_path / "a.tif"), arr)


def test_cli_gt_without_prediction(tmp_path, capsys):
    _folders(tmp_path, 6, 255, np.uint8)
    (tmp_path / "pred" / "img_2.png").unlink()
    rc, err, out = _cli(tmp_path, 6, 255, capsys)
    assert rc == 1 and not out.exists()
    assert str(tmp_path / "gt" / "img_2.png") in err and "no prediction" in err


def test_cli_unreadable_and_bad_files(tmp_path, capsys):
    _folders(tmp_path, 6, 255, np.uint8)
    (tmp_path / "pred" / "img_1.png").write_bytes(b"garbage")
    rc, err, out = _cli(tmp_path, 6, 255, capsys)
    assert rc == 1 and not out.exists() and f"cannot read label map {tmp_path / 'pred' / 'img_1.png'}" in err
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(tmp_path / "pred" / "img_1.png")
    rc, err, out = _cli(tmp_path, 6, 255, capsys)
    assert rc == 1 and "mode RGB, expected a single-channel label map" in err
    Image.fromarray(np.zeros((20, 32), np.uint8)).save(tmp_path / "pred" / "img_1.png")
    rc, err, out = _cli(tmp_path, 6, 255, capsys)
    assert rc == 1 and "prediction shape (20, 32) != ground truth shape (24, 32)" in err and "img_1.png" in err
    Image.fromarray(np.full((24, 32), 9, np.uint8)).save(tmp_path / "pred" / "img_1.png")
    rc, err, out = _cli(tmp_path, 6, 255, capsys)
    assert rc == 1 and "contain 9, outside 0..5" in err and "img_1.png" in err


def test_module_entry_point(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    _folders(tmp_path, 6, 255, np.uint8, n=2)
    out = tmp_path / "o.json"
    cmd = [sys.executable, "-m", "fisa.metrics.semantic", "--gt-dir", str(tmp_path / "gt"), "--pred-dir",
           str(tmp_path / "pred"), "--num-classes", "6", "--ignore-label", "255", "--output", str(out)]
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert "2 images: mIoU" in proc.stdout and set(json.loads(out.read_text())) >= {"mIoU", "fwIoU", "mACC", "pACC", "IoU"}
    out.unlink()
    proc = subprocess.run(cmd[:-4] + ["--ignore-label", "3", "--output", str(out)], capture_output=True, text=True, cwd=repo)
    assert proc.returncode == 1 and "ignore_label 3 is a valid class id" in proc.stderr and not out.exists()
