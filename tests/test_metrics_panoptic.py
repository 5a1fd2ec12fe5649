"""PQ: hand-computed cases, an independent reference on random cases, input errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fisa.metrics.panoptic import PanopticInputError, main, pq_compute
from fisa.utils.panoptic_ids import id2rgb, rgb2id
from fisa.metrics.synthetic import write_panoptic_case
from reference_metrics import pq_compute_reference

REPO = Path(__file__).resolve().parents[1]
CATEGORIES = [
    {"id": 1, "name": "thing_a", "isthing": 1},
    {"id": 2, "name": "stuff_b", "isthing": 0},
    {"id": 7, "name": "thing_never", "isthing": 1},
    {"id": 9, "name": "stuff_never", "isthing": 0},
]


def _write(root: Path, gt_maps, gt_segments, pred_maps, pred_segments, categories=CATEGORIES):
    """Write a GT and a prediction from id maps; segments = per image list of segments_info."""
    for sub in ("gt", "pred"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    gt_anns, pred_anns = [], []
    for i, (g, gs, p, ps) in enumerate(zip(gt_maps, gt_segments, pred_maps, pred_segments)):
        name = f"{i:04d}.png"
        Image.fromarray(id2rgb(np.array(g))).save(root / "gt" / name)
        Image.fromarray(id2rgb(np.array(p))).save(root / "pred" / name)
        gt_anns.append({"image_id": i, "file_name": name, "segments_info": gs})
        pred_anns.append({"image_id": i, "file_name": name, "segments_info": ps})
    (root / "gt.json").write_text(json.dumps({"annotations": gt_anns, "categories": categories}))
    (root / "pred.json").write_text(json.dumps({"annotations": pred_anns}))
    return dict(gt_json=root / "gt.json", gt_dir=root / "gt", pred_json=root / "pred.json", pred_dir=root / "pred")


def _hand_case(root: Path):
    # image 0 (4x6): thing A (id 10) cols 0-2, stuff B (id 20) rows 0-1 cols 3-5, VOID rows 2-3 cols 3-5
    g0 = np.zeros((4, 6), int)
    g0[:, 0:3] = 10
    g0[0:2, 3:6] = 20
    # prediction: a (cat 1) cols 0-1 -> IoU 8/12 with A; b (cat 2) rows 0-1 cols 2-5 -> IoU 6/8 with B;
    # c (cat 1) rows 2-3 col 2 -> a false positive; VOID predicted where the GT is VOID
    p0 = np.zeros((4, 6), int)
    p0[:, 0:2] = 100
    p0[0:2, 2:6] = 200
    p0[2:4, 2] = 300
    gs0 = [{"id": 10, "category_id": 1, "iscrowd": 0, "area": 12},
           {"id": 20, "category_id": 2, "iscrowd": 0, "area": 6}]
    ps0 = [{"id": 100, "category_id": 1}, {"id": 200, "category_id": 2}, {"id": 300, "category_id": 1}]
    # image 1 (2x4): crowd of cat 1 (id 5) cols 0-1, stuff (id 6) col 2, VOID col 3
    g1 = np.array([[5, 5, 6, 0], [5, 5, 6, 0]])
    # prediction: cat 1 on the crowd (ignored, not a FP); cat 2 over col 2 and the VOID col 3:
    # IoU = 2 / (4 + 2 - 2 - 2) = 1 once VOID is removed from the union (0.5, no match, without)
    p1 = np.array([[50, 50, 60, 60], [50, 50, 60, 60]])
    gs1 = [{"id": 5, "category_id": 1, "iscrowd": 1, "area": 4},
           {"id": 6, "category_id": 2, "iscrowd": 0, "area": 2}]
    ps1 = [{"id": 50, "category_id": 1}, {"id": 60, "category_id": 2}]
    return _write(root, [g0, g1], [gs0, gs1], [p0, p1], [ps0, ps1])


def test_hand_computed_case(tmp_path):
    c = _hand_case(tmp_path)
    r = pq_compute(c["gt_json"], c["gt_dir"], c["pred_json"], c["pred_dir"])
    # cat 1: tp 1 (IoU 2/3), fp 1, fn 0 -> PQ (2/3)/1.5; cat 2: tp 2 (IoU 0.75 and 1.0)
    assert r["per_class"][1] == pytest.approx({"pq": 4 / 9, "sq": 2 / 3, "rq": 2 / 3}, abs=1e-12)
    assert r["per_class"][2] == pytest.approx({"pq": 0.875, "sq": 0.875, "rq": 1.0}, abs=1e-12)
    # categories with no segment on either side: 0.0 (hotcoco says -1) and not averaged
    assert r["per_class"][7] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    assert r["per_class"][9] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    assert r["Things"] == pytest.approx({"pq": 4 / 9, "sq": 2 / 3, "rq": 2 / 3, "n": 1}, abs=1e-12)
    assert r["Stuff"] == pytest.approx({"pq": 0.875, "sq": 0.875, "rq": 1.0, "n": 1}, abs=1e-12)
    assert r["All"] == pytest.approx({"pq": (4 / 9 + 0.875) / 2, "sq": (2 / 3 + 0.875) / 2,
                                      "rq": (2 / 3 + 1) / 2, "n": 2}, abs=1e-12)
    assert_pq_close(r, pq_compute_reference(c["gt_json"], c["gt_dir"], c["pred_json"], c["pred_dir"]))


def test_hand_computed_boundaries(tmp_path):
    """IoU exactly 0.5 is no match; exactly half on VOID is a FP; only a crowd of the same class excuses."""
    # image 0: stuff A (cat 2) cols 0-1, a crowd of cat 1 cols 2-3
    g0 = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])
    gs0 = [{"id": 1, "category_id": 2, "iscrowd": 0, "area": 4}, {"id": 2, "category_id": 1, "iscrowd": 1, "area": 4}]
    # 11 (cat 2): IoU 2/4 = 0.5 with A -> no match (FN for A, FP); 12 (cat 2): half on the crowd of
    # cat 1 -> a FP (a crowd excuses only its own class); 13 (cat 1) on the cat-1 crowd -> ignored
    p0 = np.array([[11, 12, 12, 13], [11, 12, 12, 13]])
    ps0 = [{"id": 11, "category_id": 2}, {"id": 12, "category_id": 2}, {"id": 13, "category_id": 1}]
    # image 1: VOID col 0, stuff (cat 2) col 1
    g1 = np.array([[0, 3], [0, 3]])
    gs1 = [{"id": 3, "category_id": 2, "iscrowd": 0, "area": 2}]
    # 14 (cat 1): exactly half on VOID -> still a FP; 15 (cat 2): IoU 1 / (2 + 2 - 1 - 1) = 0.5 -> no
    # match (FN, and a FP: half on VOID is not more than half)
    p1 = np.array([[14, 14], [15, 15]])
    ps1 = [{"id": 14, "category_id": 1}, {"id": 15, "category_id": 2}]
    # image 2: one exact match per class
    g2 = np.array([[4, 5]])
    gs2 = [{"id": 4, "category_id": 1, "iscrowd": 0, "area": 1}, {"id": 5, "category_id": 2, "iscrowd": 0, "area": 1}]
    p2 = np.array([[16, 17]])
    ps2 = [{"id": 16, "category_id": 1}, {"id": 17, "category_id": 2}]
    c = _write(tmp_path, [g0, g1, g2], [gs0, gs1, gs2], [p0, p1, p2], [ps0, ps1, ps2])
    r = pq_compute(c["gt_json"], c["gt_dir"], c["pred_json"], c["pred_dir"])
    # cat 1: tp 1, fp 1 (14), fn 0 -> RQ 1 / 1.5; cat 2: tp 1, fp 3 (11, 12, 15), fn 2 (A, 3) -> RQ 1 / 3.5
    assert r["per_class"][1] == pytest.approx({"pq": 2 / 3, "sq": 1.0, "rq": 2 / 3}, abs=1e-12)
    assert r["per_class"][2] == pytest.approx({"pq": 2 / 7, "sq": 1.0, "rq": 2 / 7}, abs=1e-12)
    assert_pq_close(r, pq_compute_reference(c["gt_json"], c["gt_dir"], c["pred_json"], c["pred_dir"]))


def test_rgb_id_round_trip():
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 256 ** 3 - 1, 123456]], dtype=np.uint32)
    rgb = id2rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 4, 3)
    assert rgb[1, 1].tolist() == [0, 0, 1]
    np.testing.assert_array_equal(rgb2id(rgb), ids)


def assert_pq_close(got: dict, ref: dict, tol: float = 1e-9) -> None:
    """Every PQ/SQ/RQ of `got` within `tol` of `ref`, same n, same categories."""
    for group in ("All", "Things", "Stuff"):
        assert got[group]["n"] == ref[group]["n"], group
        for k in ("pq", "sq", "rq"):
            assert abs(got[group][k] - ref[group][k]) <= tol, (group, k, got[group][k], ref[group][k])
    assert set(got["per_class"]) == set(ref["per_class"])
    for cat, v in ref["per_class"].items():
        for k in ("pq", "sq", "rq"):
            assert abs(got["per_class"][cat][k] - v[k]) <= tol, (cat, k)


@pytest.mark.parametrize("seed", range(6))
def test_random_cases_match_reference(tmp_path, seed):
    c = write_panoptic_case(tmp_path, num_images=6, height=40 + 8 * seed, width=56, seed=seed)
    ref = pq_compute_reference(c["gt_json"], c["gt_dir"], c["pred_json"], c["pred_dir"])
    got = pq_compute(c["gt_json"], c["gt_dir"], c["pred_json"], c["pred_dir"])
    assert_pq_close(got, ref)
    # the case exercises what it is meant to: crowd, VOID, a class only predicted, a class in neither
    gt = json.loads(Path(c["gt_json"]).read_text())
    pred = json.loads(Path(c["pred_json"]).read_text())
    assert any(s["iscrowd"] for a in gt["annotations"] for s in a["segments_info"])
    assert (rgb2id(np.array(Image.open(Path(c["gt_dir"]) / gt["annotations"][0]["file_name"]))) == 0).any()
    only_predicted, never = c["categories"][-2]["id"], c["categories"][-1]["id"]
    assert any(s["category_id"] == only_predicted for a in pred["annotations"] for s in a["segments_info"])
    assert not any(s["category_id"] == only_predicted for a in gt["annotations"] for s in a["segments_info"])
    assert got["per_class"][only_predicted] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}  # fp > 0: counted in n
    assert got["per_class"][never] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}  # tp+fp+fn = 0: not counted
    assert got["All"]["n"] == len({s["category_id"] for d in (gt, pred) for a in d["annotations"]
                                   for s in a["segments_info"]})


def test_gt_areas_come_from_the_json(tmp_path):
    """panopticapi takes GT areas from the JSON, not the PNG: a changed area changes the union."""
    c = write_panoptic_case(tmp_path, num_images=4, seed=11)
    before = pq_compute(c["gt_json"], c["gt_dir"], c["pred_json"], c["pred_dir"])
    gt = json.loads(Path(c["gt_json"]).read_text())
    for ann in gt["annotations"]:
        for seg in ann["segments_info"]:
            seg["area"] += 7
    Path(c["gt_json"]).write_text(json.dumps(gt))
    after = pq_compute(c["gt_json"], c["gt_dir"], c["pred_json"], c["pred_dir"])
    assert after["All"]["sq"] < before["All"]["sq"]
    assert_pq_close(after, pq_compute_reference(c["gt_json"], c["gt_dir"], c["pred_json"], c["pred_dir"]))


def test_gt_segment_missing_from_json_is_skipped_like_the_reference(tmp_path):
    c = write_panoptic_case(tmp_path, num_images=4, seed=5)
    gt = json.loads(Path(c["gt_json"]).read_text())
    for ann in gt["annotations"]:
        ann["segments_info"] = ann["segments_info"][1:]
    Path(c["gt_json"]).write_text(json.dumps(gt))
    got = pq_compute(c["gt_json"], c["gt_dir"], c["pred_json"], c["pred_dir"])
    assert_pq_close(got, pq_compute_reference(c["gt_json"], c["gt_dir"], c["pred_json"], c["pred_dir"]))


# ---- input errors: the CLI exits non-zero, names image / segment / file, and writes nothing


@pytest.fixture
def case(tmp_path):
    return write_panoptic_case(tmp_path / "case", num_images=3, seed=2)


def _run_cli(c, tmp_path, capsys):
    out = tmp_path / "out" / "pq.json"
    rc = main(["--gt-json", str(c["gt_json"]), "--gt-dir", str(c["gt_dir"]), "--pred-json", str(c["pred_json"]),
               "--pred-dir", str(c["pred_dir"]), "--output", str(out)])
    return rc, capsys.readouterr().err, out


def _edit(path, fn):
    data = json.loads(Path(path).read_text())
    fn(data)
    Path(path).write_text(json.dumps(data))


def test_cli_writes_panopticapi_structure(case, tmp_path, capsys):
    rc, err, out = _run_cli(case, tmp_path, capsys)
    assert rc == 0, err
    data = json.loads(out.read_text())
    assert set(data) == {"All", "Things", "Stuff", "per_class"}
    assert set(data["All"]) == {"pq", "sq", "rq", "n"}
    assert set(data["per_class"]) == {str(c["id"]) for c in case["categories"]}
    ref = pq_compute_reference(case["gt_json"], case["gt_dir"], case["pred_json"], case["pred_dir"])
    assert data["All"]["pq"] == pytest.approx(ref["All"]["pq"], abs=1e-9)
    assert 0 <= data["All"]["pq"] <= 1


def test_cli_segment_in_png_not_in_json(case, tmp_path, capsys):
    removed = {}

    def drop(d):
        seg = d["annotations"][1]["segments_info"].pop(0)
        removed["id"] = seg["id"]

    _edit(case["pred_json"], drop)
    rc, err, out = _run_cli(case, tmp_path, capsys)
    assert rc == 1 and not out.exists()
    assert "image 1" in err and f"segment {removed['id']}" in err and "PNG" in err


def test_cli_unknown_category(case, tmp_path, capsys):
    def relabel(d):
        d["annotations"][2]["segments_info"][0]["category_id"] = 9999

    _edit(case["pred_json"], relabel)
    seg_id = json.loads(Path(case["pred_json"]).read_text())["annotations"][2]["segments_info"][0]["id"]
    rc, err, out = _run_cli(case, tmp_path, capsys)
    assert rc == 1 and not out.exists()
    assert "image id 2" in err and f"segment {seg_id}" in err and "unknown category_id 9999" in err
    assert str(case["pred_json"]) in err


def test_cli_missing_prediction(case, tmp_path, capsys):
    _edit(case["pred_json"], lambda d: d["annotations"].pop(1))
    rc, err, out = _run_cli(case, tmp_path, capsys)
    assert rc == 1 and not out.exists()
    assert "no prediction for the image with id 1" in err


def test_cli_unreadable_png(case, tmp_path, capsys):
    bad = Path(case["pred_dir"]) / "000000000001.png"
    bad.write_bytes(b"not a png")
    rc, err, out = _run_cli(case, tmp_path, capsys)
    assert rc == 1 and not out.exists()
    assert str(bad) in err


def test_cli_missing_png_and_folder(case, tmp_path, capsys):
    missing = Path(case["pred_dir"]) / "000000000002.png"
    missing.unlink()
    rc, err, out = _run_cli(case, tmp_path, capsys)
    assert rc == 1 and not out.exists() and str(missing) in err
    case["pred_dir"] = tmp_path / "nowhere"
    rc, err, out = _run_cli(case, tmp_path, capsys)
    assert rc == 1 and "nowhere" in err and "does not exist" in err


@pytest.mark.parametrize("key", ["iscrowd", "area"])
def test_gt_segment_without_required_key(case, key):
    def drop(d):
        del d["annotations"][0]["segments_info"][1][key]

    _edit(case["gt_json"], drop)
    seg_id = json.loads(Path(case["gt_json"]).read_text())["annotations"][0]["segments_info"][1]["id"]
    with pytest.raises(PanopticInputError, match=rf"image id 0: segment {seg_id} has no '{key}'"):
        pq_compute(case["gt_json"], case["gt_dir"], case["pred_json"], case["pred_dir"])


def test_categories_need_isthing_and_both_groups(case):
    _edit(case["gt_json"], lambda d: d["categories"][0].pop("isthing"))
    with pytest.raises(PanopticInputError, match="needs 'id' and 'isthing'"):
        pq_compute(case["gt_json"], case["gt_dir"], case["pred_json"], case["pred_dir"])
    _edit(case["gt_json"], lambda d: [c.__setitem__("isthing", 1) for c in d["categories"]])
    with pytest.raises(PanopticInputError, match="no stuff categories"):
        pq_compute(case["gt_json"], case["gt_dir"], case["pred_json"], case["pred_dir"])


def test_group_with_nothing_to_average(tmp_path):
    """panopticapi divides by zero when no stuff category occurs: null with n = 0; nothing at all: an error."""
    g = np.array([[10, 10], [10, 10]])
    gs = [{"id": 10, "category_id": 1, "iscrowd": 0, "area": 4}]
    ps = [{"id": 10, "category_id": 1}]
    c = _write(tmp_path / "a", [g], [gs], [g], [ps])
    r = pq_compute(c["gt_json"], c["gt_dir"], c["pred_json"], c["pred_dir"])
    assert r["Stuff"] == {"pq": None, "sq": None, "rq": None, "n": 0}
    assert r["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1} and r["Things"] == r["All"]
    empty = np.zeros((2, 2), int)
    c = _write(tmp_path / "b", [empty], [[]], [empty], [[]])
    with pytest.raises(PanopticInputError, match="no segment in the ground truth or the predictions of the 1 images"):
        pq_compute(c["gt_json"], c["gt_dir"], c["pred_json"], c["pred_dir"])


def test_module_entry_point_exit_code(case, tmp_path):
    out = tmp_path / "o.json"
    _edit(case["pred_json"], lambda d: d["annotations"].pop(0))
    proc = subprocess.run(
        [sys.executable, "-m", "fisa.metrics.panoptic", "--gt-json", str(case["gt_json"]), "--gt-dir",
         str(case["gt_dir"]), "--pred-json", str(case["pred_json"]), "--pred-dir", str(case["pred_dir"]),
         "--output", str(out)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1 and not out.exists()
    assert "no prediction for the image with id 0" in proc.stderr


def test_malformed_json_errors(case, tmp_path):
    files = (case["gt_json"], case["gt_dir"], case["pred_json"], case["pred_dir"])
    original_gt = Path(case["gt_json"]).read_text()
    _edit(case["gt_json"], lambda d: d["annotations"][1]["segments_info"][0].__setitem__("category_id", 4242))
    with pytest.raises(PanopticInputError, match="ground truth JSON .* image id 1: segment .* unknown category_id 4242"):
        pq_compute(*files)
    Path(case["gt_json"]).write_text(original_gt)
    _edit(case["pred_json"], lambda d: d["annotations"][0]["segments_info"].append(d["annotations"][0]["segments_info"][0]))
    with pytest.raises(PanopticInputError, match="image id 0: segment id .* appears twice"):
        pq_compute(*files)
    Path(case["gt_json"]).write_text("{not json")
    with pytest.raises(PanopticInputError, match=f"ground truth JSON {case['gt_json']} cannot be read"):
        pq_compute(*files)
    Path(case["gt_json"]).write_text(original_gt)
    with pytest.raises(PanopticInputError, match="prediction JSON .*nope.json does not exist"):
        pq_compute(case["gt_json"], case["gt_dir"], tmp_path / "nope.json", case["pred_dir"])


def test_string_image_ids_as_in_ade_and_mapillary(tmp_path):
    """ADE-150's and Mapillary's panoptic JSONs use file-name strings as image ids (panopticapi
    accepts them): the result equals the same case with integer ids."""
    c = _hand_case(tmp_path)
    expected = pq_compute(c["gt_json"], c["gt_dir"], c["pred_json"], c["pred_dir"])
    for key in ("gt_json", "pred_json"):
        _edit(c[key], lambda d: [a.update(image_id=f"ADE_val_{a['image_id']:08d}") for a in d["annotations"]])
    assert json.loads(c["gt_json"].read_text())["annotations"][1]["image_id"] == "ADE_val_00000001"
    assert pq_compute(c["gt_json"], c["gt_dir"], c["pred_json"], c["pred_dir"]) == expected
