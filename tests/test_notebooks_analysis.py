"""The analysis notebooks execute headless (nbclient) on a small hand-made results folder."""
from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from PIL import Image

from analysis import aggregate as agg
from analysis import per_class as PC
from analysis import qualitative as Q
from analysis_fixtures import classes_of, write_eval

NOTEBOOKS = Path(__file__).resolve().parents[1] / "analysis" / "notebooks"


@pytest.fixture
def results(tmp_path):
    """metrics.csv, per_class.csv, predictions of two experiments, images and GT of 3 images."""
    res = tmp_path / "small"
    pcs = {"fisa": {"wall": 70.0, "skyscraper": 20.0, "palm": 12.0}, "baseline": {"wall": 60.0, "skyscraper": 5.0, "palm": 13.0},
           "fisa_main": {"wall": 71.0, "skyscraper": 21.0, "palm": 14.0}}
    evals = [write_eval(res, e, 0, "ade150", {"PQ": 20.0, "mIoU": 30.0}, {c: {"IoU": v, "PQ": v / 2} for c, v in pc.items()})
             for e, pc in pcs.items()]
    metrics, per_class = agg.aggregate("small", evals, classes_of=classes_of)
    agg.write_csv(metrics, res / "metrics.csv"); agg.write_csv(per_class, res / "per_class.csv")
    images, gts = tmp_path / "images", tmp_path / "gt"
    images.mkdir(); gts.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        gt = rng.integers(0, 3, (12, 16)).astype(np.uint8)
        gt[0, 0] = 255
        Image.fromarray(gt).save(gts / f"img{i}.png")
        Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(images / f"img{i}.jpg")
        for e, shift in (("fisa", 0), ("fisa_main", 0), ("baseline", 1)):
            d = Q.prediction_dir(res, e, 0, "ade150"); d.mkdir(parents=True, exist_ok=True)
            pred = np.where(gt == 255, 0, (gt + shift) % 3).astype(np.uint8)
            Image.fromarray(pred).save(d / f"img{i}.png")
    return res, images, gts


def _run(name, tmp_path):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    nbformat.write(nb, tmp_path / name)
    return nb


def _outputs(nb) -> str:
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", "") + str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(text)


def test_per_class_notebook_executes(results, tmp_path, monkeypatch):
    res, _, gts = results
    for k, v in {"FISA_RESULTS_DIR": str(res), "FISA_EXPERIMENT_A": "fisa", "FISA_EXPERIMENT_B": "baseline",
                 "FISA_GT_DIR": str(gts)}.items():
        monkeypatch.setenv(k, v)
    nb = _run("per_class.ipynb", tmp_path)
    out = _outputs(nb)
    assert "skyscraper" in out and "3 images" in out
    assert "no saved predictions" not in out


def test_qualitative_notebook_executes(results, tmp_path, monkeypatch):
    res, images, gts = results
    for k, v in {"FISA_RESULTS_DIR": str(res), "FISA_IMAGE_DIR": str(images), "FISA_GT_DIR": str(gts),
                 "FISA_PER_PAGE": "2"}.items():
        monkeypatch.setenv(k, v)
    nb = _run("qualitative.ipynb", tmp_path)
    out = _outputs(nb)
    assert "3 images predicted by all of ['fisa_main', 'baseline']" in out
    assert "    ground truth: " in out and "       fisa_main: " in out   # classes listed per shown image
    assert any(o.get("data", {}).get("image/png") for c in nb.cells for o in c.get("outputs", []))


def test_compare_and_seen_summary(results):
    res, _, _ = results
    per_class = agg.read_per_class(res / "per_class.csv")
    table = PC.compare(per_class, "fisa", "baseline", "ade150")
    assert table["class"].tolist() == ["skyscraper", "wall", "palm"]
    assert table["diff"].tolist() == [15.0, 10.0, -1.0]
    summary = PC.seen_summary(table, ["fisa", "baseline"])
    assert summary.loc["unseen", "fisa"] == 16.0 and summary.loc["seen", "classes"] == 1
    assert PC.worst(table, "fisa", 1)["class"].tolist() == ["palm"]
    with pytest.raises(ValueError, match="no per-class IoU of 'x' or 'y'"):
        PC.compare(per_class, "x", "y", "ade150")


def test_confusion_from_predictions(results):
    res, _, gts = results
    from fisa.metrics.semantic import read_label_map
    gt_of = {p.stem: read_label_map(p) for p in gts.glob("*.png")}
    cm = PC.confusion_matrix(PC.prediction_pairs(Q.prediction_dir(res, "baseline", 0, "ade150"), gt_of), 3, 255)
    # baseline predicts (gt + 1) mod 3 everywhere: every GT pixel of class g lands on row g+1
    gt_counts = np.bincount(np.concatenate([g[g != 255] for g in gt_of.values()]), minlength=3)
    for g in range(3):
        assert cm[(g + 1) % 3, g] == gt_counts[g]
    top = PC.top_confusions(cm, ["a", "b", "c"], k=3)
    assert set(zip(top["ground truth"], top["predicted"])) == {("a", "b"), ("b", "c"), ("c", "a")}
    assert top["share of ground truth"].tolist() == [1.0, 1.0, 1.0]
