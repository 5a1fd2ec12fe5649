"""metrics.csv / per_class.csv: tidy rows from hand-made result JSONs."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from analysis import aggregate as agg
from analysis import vocabulary
from analysis_fixtures import COMMIT, classes_of, write_efficiency, write_eval


@pytest.fixture
def results(tmp_path):
    evals = [
        write_eval(tmp_path, "fisa", 0, "ade150", {"PQ": 27.0, "mIoU": 36.0},
                   {"wall": {"IoU": 70.0, "PQ": 50.0}, "skyscraper": {"IoU": 5.0, "PQ": 1.0},
                    "palm": {"IoU": 12.0, "PQ": 3.0}}),
        write_eval(tmp_path, "fisa", 1, "ade150", {"PQ": 28.0, "mIoU": 37.0},
                   {"wall": {"IoU": 71.0, "PQ": 51.0}, "skyscraper": {"IoU": 6.0, "PQ": 2.0},
                    "palm": {"IoU": 13.0, "PQ": 4.0}}),
        write_eval(tmp_path, "fisa", 0, "refcoco", {"mIoU": 24.0, "oIoU": 22.0, "P@0.5": 20.0}),
    ]
    eff = [write_efficiency(tmp_path, "fisa", {"FPS": 2.5, "memory_GB": 9.0, "gpu_hours": 45.0},
                            train_device="NVIDIA A100")]
    return tmp_path, evals, eff


def test_metric_rows_are_tidy(results):
    _, evals, eff = results
    metrics, _ = agg.aggregate("small", evals, eff, classes_of=classes_of)
    assert list(metrics.columns) == agg.METRIC_COLUMNS
    # 2 seeds x 2 metrics on ade150, 3 referring metrics, 3 efficiency metrics
    assert len(metrics) == 4 + 3 + 3
    row = metrics[(metrics.seed == 1) & (metrics.metric == "PQ")].iloc[0]
    assert (row.experiment, row.dataset, row.value, row.commit, row.config_hash, row.device) == \
        ("fisa", "ade150", 28.0, COMMIT, "cfg0", "cpu")
    fps = metrics[metrics.metric == "FPS"].iloc[0]
    assert (fps.dataset, fps.device, fps.value) == ("ade150", "NVIDIA H200", 2.5)
    # GPU hours were spent where the model trained, not where FPS was timed
    assert metrics[metrics.metric == "gpu_hours"].device.tolist() == ["NVIDIA A100"]
    assert set(metrics[metrics.dataset == "refcoco"].metric) == {"mIoU", "oIoU", "P@0.5"}


def test_per_class_rows_and_seen_from_vocabularies(results):
    _, evals, eff = results
    _, per_class = agg.aggregate("small", evals, eff, classes_of=classes_of)
    assert list(per_class.columns) == agg.PER_CLASS_COLUMNS
    assert len(per_class) == 2 * 3 * 2
    seen = per_class.groupby("class").seen.first().to_dict()
    # wall: COCO has "wall-other-merged" with synonym "wall"; palm's synonym "palm tree" is not "tree"
    assert seen == {"wall": True, "skyscraper": False, "palm": False}
    v = per_class[(per_class["class"] == "palm") & (per_class.metric == "IoU") & (per_class.seed == 1)].value
    assert v.tolist() == [13.0]


def test_written_csvs_round_trip(results, tmp_path):
    root, evals, eff = results
    out_m, out_pc = tmp_path / "out" / "metrics.csv", tmp_path / "out" / "per_class.csv"
    metrics, per_class = agg.aggregate("small", evals, eff, classes_of=classes_of)
    agg.write_csv(metrics, out_m)
    agg.write_csv(per_class, out_pc)
    back = agg.read_metrics(out_m)
    pd.testing.assert_frame_equal(back, metrics, check_dtype=False)
    assert agg.read_per_class(out_pc).seen.dtype == bool
    assert not list((tmp_path / "out").glob(".*tmp"))  # atomic writes leave no temporaries


def test_cli_uses_registry_vocabulary(results, tmp_path, monkeypatch):
    _, evals, eff = results
    monkeypatch.setattr(vocabulary, "dataset_classes", classes_of)
    out_m, out_pc = tmp_path / "m.csv", tmp_path / "pc.csv"
    agg.main(["--preset", "small", "--eval-jsons", *map(str, evals), "--efficiency-jsons", *map(str, eff),
              "--metrics-out", str(out_m), "--per-class-out", str(out_pc)])
    assert len(agg.read_metrics(out_m)) == 10
    assert agg.read_per_class(out_pc).groupby("class").seen.first()["wall"]


def test_missing_key_names_file_and_key(tmp_path):
    path = write_eval(tmp_path, "fisa", 0, "ade150", {"PQ": 1.0})
    data = json.loads(path.read_text()); del data["metrics"]; path.write_text(json.dumps(data))
    with pytest.raises(agg.ResultFileError, match=rf"{path}.*'metrics'"):
        agg.aggregate("small", [path], classes_of=classes_of)


def test_bad_value_and_wrong_preset_are_named(tmp_path):
    bad = write_eval(tmp_path, "fisa", 0, "ade150", {"PQ": "high"})
    with pytest.raises(agg.ResultFileError, match=r"metrics\.PQ is not a number"):
        agg.aggregate("small", [bad], classes_of=classes_of)
    other = write_eval(tmp_path, "fisa", 0, "ade150", {"PQ": 1.0}, preset="paper")
    with pytest.raises(agg.ResultFileError, match="preset 'paper' differs from --preset 'small'"):
        agg.aggregate("small", [other], classes_of=classes_of)
    broken = tmp_path / "broken.json"; broken.write_text("{")
    with pytest.raises(agg.ResultFileError, match="broken.json: not valid JSON"):
        agg.aggregate("small", [broken], classes_of=classes_of)


def test_duplicate_result_is_an_error(tmp_path):
    a = write_eval(tmp_path, "fisa", 0, "ade150", {"PQ": 1.0})
    b = write_eval(tmp_path / "copy", "fisa", 0, "ade150", {"PQ": 2.0})
    with pytest.raises(agg.ResultFileError, match="reported by both"):
        agg.aggregate("small", [a, b], classes_of=classes_of)


def test_null_metric_is_nan_not_crash(tmp_path):
    p = write_eval(tmp_path, "fisa", 0, "ade150", {"PQ_th": None, "PQ": 3.0})
    metrics, _ = agg.aggregate("small", [p], classes_of=classes_of)
    assert math.isnan(metrics[metrics.metric == "PQ_th"].value.iloc[0])


def test_unseen_classes_derived_from_two_vocabularies(monkeypatch):
    monkeypatch.setattr(vocabulary, "dataset_classes", classes_of)
    assert vocabulary.unseen_classes("ade150") == ["windowpane", "skyscraper", "palm"]
    assert vocabulary.normalise_name(" Tree-merged ") == "tree"


def test_reading_a_bad_metrics_csv_names_it(tmp_path):
    empty = tmp_path / "metrics.csv"; empty.write_text("")
    with pytest.raises(agg.ResultFileError, match=r"metrics.csv: empty file"):
        agg.read_metrics(empty)
    with pytest.raises(agg.ResultFileError, match=r"nope.csv: file not found"):
        agg.read_metrics(tmp_path / "nope.csv")
    wrong = tmp_path / "wrong.csv"; wrong.write_text("a,b\n1,2\n")
    with pytest.raises(agg.ResultFileError, match=r"wrong.csv: missing columns \['preset'"):
        agg.read_metrics(wrong)


def test_unseen_ade150_classes_from_the_registry():
    """Integration with fisa.data.registry: the real COCO and ADE-150 vocabularies."""
    unseen = vocabulary.unseen_classes("ade150")
    ade = [c[0] for c in vocabulary.dataset_classes("ade150")]
    assert set(unseen) < set(ade) and len(unseen) > 20
    # classes COCO-Panoptic has (wall via "wall-other-merged", person, car) are seen; skyscraper is not
    assert not {"wall", "person", "car"} & set(unseen)
    assert "skyscraper" in unseen
    assert vocabulary.unseen_classes("coco") == []
