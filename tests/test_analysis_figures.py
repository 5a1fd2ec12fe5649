"""Figures: valid PDF/PNG files whose plotted data (returned by the plotting code) is what the metrics say."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis import aggregate as agg
from analysis import figures as F
from analysis import qualitative as Q
from fisa.config import load_config
from analysis_fixtures import classes_of, write_eval

PNG_MAGIC, PDF_MAGIC = b"\x89PNG\r\n\x1a\n", b"%PDF-"


def _inputs(tmp_path, evals, **kw):
    metrics, per_class = agg.aggregate("small", evals, classes_of=classes_of)
    return F.Inputs(preset="small", metrics=metrics, per_class=per_class, config=load_config(),
                    results_dir=tmp_path, **kw)


def _check_files(tmp_path, name):
    pdf, png = (tmp_path / f"{name}.pdf").read_bytes(), (tmp_path / f"{name}.png").read_bytes()
    assert pdf.startswith(PDF_MAGIC) and pdf.rstrip().endswith(b"%%EOF")
    assert png.startswith(PNG_MAGIC)
    with Image.open(tmp_path / f"{name}.png") as im:
        im.verify()


def test_fig2a_bars_are_the_metrics_and_paper_values(tmp_path):
    evals = [write_eval(tmp_path, "baseline", 0, "ade150", {"PQ": 10.0, "mIoU": 20.0}),
             write_eval(tmp_path, "oracle_classifier", 0, "ade150", {"PQ": 40.0, "mIoU": 55.0}),
             write_eval(tmp_path, "oracle_classifier", 1, "ade150", {"PQ": 42.0, "mIoU": 57.0})]
    data = F.render("fig2a_oracle", _inputs(tmp_path, evals), tmp_path / "f.pdf", tmp_path / "f.png")
    _check_files(tmp_path, "f")
    d = data.set_index(["experiment", "metric"])
    assert d.loc[("oracle_classifier", "PQ"), "value"] == 41.0
    assert d.loc[("oracle_classifier", "PQ"), "std"] == pytest.approx(np.sqrt(2))
    assert d.loc[("oracle_classifier", "mIoU"), "n"] == 2
    assert d.loc[("baseline", "mIoU"), "value"] == 20.0
    assert d.loc[("oracle_generator", "PQ"), "n"] == 0          # not run: drawn as a placeholder
    assert d.loc[("oracle_classifier", "mIoU"), "paper"] == 60.5
    assert d.loc[("oracle_generator", "mIoU"), "paper"] == pytest.approx(60.5 - 32.1)
    assert d.loc[("oracle_generator", "PQ"), "paper"] == pytest.approx(44.6 - 12.7)


def test_fig2b_renders_without_the_optional_experiment(tmp_path):
    evals = [write_eval(tmp_path, "fisa", 0, "ade150", {"PQ": 27.0, "mIoU": 36.0})]
    data = F.render("fig2b_frozen_generator", _inputs(tmp_path, evals), tmp_path / "f.pdf", tmp_path / "f.png")
    _check_files(tmp_path, "f")
    assert data.set_index(["experiment", "metric"]).loc[("fisa_retrained_generator", "PQ"), "n"] == 0
    assert data.set_index(["experiment", "metric"]).loc[("fisa", "mIoU"), "value"] == 36.0


def test_fig3_gains_on_unseen_classes_only(tmp_path):
    per = {"baseline": {"wall": 60.0, "skyscraper": 5.0, "palm": 10.0, "windowpane": 30.0},
           "seve": {"wall": 90.0, "skyscraper": 15.0, "palm": 9.0, "windowpane": 33.0}}
    evals = [write_eval(tmp_path, e, 0, "ade150", {"PQ": 1.0}, {c: {"IoU": v} for c, v in pc.items()})
             for e, pc in per.items()]
    data = F.render("fig3_per_class_gains", _inputs(tmp_path, evals), tmp_path / "f.pdf", tmp_path / "f.png")
    _check_files(tmp_path, "f")
    # wall is in COCO's vocabulary: excluded although its gain (30) is the largest
    assert data["class"].tolist() == ["skyscraper", "windowpane", "palm"]
    assert data.gain.tolist() == pytest.approx([10.0, 3.0, -1.0])
    assert data.seve.tolist() == [15.0, 33.0, 9.0]


def test_fig7_x_from_resolved_config_and_paper_points(tmp_path):
    evals = [write_eval(tmp_path, "iters_100", 0, "ade150", {"PQ": 5.0}),
             write_eval(tmp_path, "iters_10000", 0, "ade150", {"PQ": 20.0}),
             write_eval(tmp_path, "iters_10000", 1, "ade150", {"PQ": 22.0})]
    inp = _inputs(tmp_path, evals)
    data = F.render("fig7_training_length", inp, tmp_path / "f.pdf", tmp_path / "f.png")
    _check_files(tmp_path, "f")
    # the small preset's iteration counts of these experiments (config.yaml, presets.small)
    expect_x = {"iters_100": 2, "iters_1000": 5, "iters_5000": 12, "iters_10000": 25, "iters_25000": 60}
    d = data.set_index("experiment")
    assert d.x.to_dict() == pytest.approx(expect_x)
    assert d.loc["iters_10000", "mean"] == 21.0 and d.loc["iters_10000", "n"] == 2
    assert d.loc["iters_10000", "paper"] == 27.5 and d.loc["iters_25000", "paper"] == 28.1
    assert d.loc["iters_1000", "n"] == 0
    assert data.x.is_monotonic_increasing

    data = F.render("fig7_data_size", inp, tmp_path / "g.pdf", tmp_path / "g.png")
    _check_files(tmp_path, "g")
    # the small preset's data fractions of these experiments, in percent (config.yaml, presets.small)
    frac = {"data_0.001": 10.0, "data_0.01": 25.0, "data_0.1": 50.0, "data_1.0": 100.0}
    assert data.set_index("experiment").x.to_dict() == pytest.approx(frac)
    assert data.set_index("experiment").loc["data_1.0", "paper"] == 27.5


class FakeDataset:
    """Stands in for build_dataset: items with image, file_name, sem_seg."""

    def __init__(self, n=3, h=8, w=10):
        rng = np.random.default_rng(0)
        self.items = [{"image": rng.integers(0, 255, (3, h, w), dtype=np.uint8), "file_name": f"img_{i}.jpg",
                       "sem_seg": rng.integers(0, 300, (h, w))} for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_qualitative_panels_show_predictions_and_gt(tmp_path):
    ds = FakeDataset()
    preds = {}
    for e in ["fisa_main", "baseline"]:
        d = Q.prediction_dir(tmp_path, e, 0, "ade150"); d.mkdir(parents=True)
        for i, item in enumerate(ds.items):
            if e == "baseline" and i == 1:
                continue  # not predicted by both: never chosen
            pred = (item["sem_seg"] + (1 if e == "baseline" else 0)).astype(np.uint16)  # > 255 classes: 16-bit
            Image.fromarray(pred).save(d / f"img_{i}.png")
            preds[(e, f"img_{i}")] = pred
    inp = F.Inputs(preset="small", metrics=pd.DataFrame(columns=agg.METRIC_COLUMNS), config=load_config(),
                   results_dir=tmp_path, dataset_factory=lambda name, r: (ds, [[f"c{i}"] for i in range(301)], 255))
    shown = F.render("qualitative", inp, tmp_path / "q.pdf", tmp_path / "q.png")
    _check_files(tmp_path, "q")
    assert list(shown) == ["img_0", "img_2"]
    for stem in shown:
        i = int(stem[-1])
        np.testing.assert_array_equal(shown[stem]["ground truth"], ds.items[i]["sem_seg"])
        np.testing.assert_array_equal(shown[stem]["fisa_main"], preds[("fisa_main", stem)])
        np.testing.assert_array_equal(shown[stem]["baseline"], preds[("baseline", stem)])
    with pytest.raises(FileNotFoundError, match=r"img_1"):
        F.render("qualitative", inp, images=["img_1"])


def test_qualitative_without_predictions_names_the_folder(tmp_path):
    inp = F.Inputs(preset="small", metrics=pd.DataFrame(columns=agg.METRIC_COLUMNS), config=load_config(),
                   results_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"eval/fisa_main/seed0/ade150/semantic"):
        F.render("qualitative", inp)


def test_colorize_and_palette():
    colors = Q.palette(3)
    assert colors.shape == (3, 3) and (Q.palette(3) == colors).all()
    out = Q.colorize(np.array([[0, 2], [255, 7]]), colors, ignore_label=255)
    assert (out[0, 0] == colors[0]).all() and (out[0, 1] == colors[2]).all()
    assert (out[1] == 0).all()


def test_cli_writes_both_files(tmp_path):
    evals = [write_eval(tmp_path, "baseline", 0, "ade150", {"PQ": 10.0, "mIoU": 20.0})]
    metrics, per_class = agg.aggregate("small", evals, classes_of=classes_of)
    agg.write_csv(metrics, tmp_path / "m.csv"); agg.write_csv(per_class, tmp_path / "pc.csv")
    F.main(["--target", "fig2a_oracle", "--preset", "small", "--config", "config.yaml", "--metrics",
            str(tmp_path / "m.csv"), "--per-class", str(tmp_path / "pc.csv"), "--results-dir", str(tmp_path),
            "--out-pdf", str(tmp_path / "c.pdf"), "--out-png", str(tmp_path / "c.png")])
    _check_files(tmp_path, "c")


def test_text_outside_finds_a_clipped_title():
    """The check can fail: a long axes title over a narrow figure leaves the canvas."""
    from analysis import plots

    fig, ax = plots.new_figure(2.0)
    ax.set_title("A very long title about ADE150 classes absent from COCO, preset small, largest gains")
    assert plots.text_outside(fig) == [ax.get_title()]
    fig2, _ = plots.new_figure(2.0)
    plots.title(fig2, "A very long title about ADE150 classes absent from COCO, preset small, largest gains")
    assert plots.text_outside(fig2) == []


def test_every_figure_text_fits_its_canvas(tmp_path):
    """Titles, labels, tick labels, legends of every metric figure lie inside the canvas (fig3 was clipped)."""
    from analysis import plots

    names = ["skyscraper", "windowpane", "palm", "wall"]
    per = {"baseline": dict(zip(names, [5.0, 30.0, 10.0, 60.0])), "seve": dict(zip(names, [15.0, 33.0, 9.0, 90.0]))}
    evals = [write_eval(tmp_path, e, s, "ade150", {"PQ": 10.0 + s, "mIoU": 20.0 + s},
                        {c: {"IoU": v} for c, v in pc.items()}) for e, pc in per.items() for s in range(2)]
    evals += [write_eval(tmp_path, e, 0, "ade150", {"PQ": 5.0, "mIoU": 9.0})
              for e in ["oracle_classifier", "fisa", "iters_100", "iters_10000", "data_0.001", "data_1.0"]]
    inp = _inputs(tmp_path, evals)
    for target in ["fig2a_oracle", "fig2b_frozen_generator", "fig3_per_class_gains", "fig7_training_length",
                   "fig7_data_size"]:
        fig, _ = F.FIGURES[target](inp)
        assert plots.text_outside(fig) == [], target
        assert "preset small" in fig._suptitle.get_text().replace("\n", " ")
