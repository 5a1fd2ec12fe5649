"""The fidelity_sensitivity table and figure from hand-made evaluations: the Δ columns and bars
are each alternative's number minus the defaults' (`fisa`), a missing run says so."""
from __future__ import annotations

import pandas as pd
import pytest

from analysis import aggregate as agg
from analysis import figures as F
from analysis import tables as T
from fisa.config import load_config
from analysis_fixtures import classes_of, write_eval

from test_analysis_figures import _check_files
from test_analysis_tables import _check_latex_structure

TABLE, FIGURE = "table_fidelity_sensitivity", "fig_fidelity_sensitivity"


def _metrics(tmp_path):
    evals = [write_eval(tmp_path, "fisa", 0, "ade150", {"PQ": 20.0, "mIoU": 30.0}),
             write_eval(tmp_path, "sens_schedule_poly", 0, "ade150", {"PQ": 21.5, "mIoU": 29.0}),
             write_eval(tmp_path, "sens_thresholds_mask2former", 0, "ade150", {"PQ": 17.0, "mIoU": 30.0})]
    return agg.aggregate("small", evals, classes_of=classes_of)


def test_table_deltas_against_the_defaults(tmp_path):
    metrics, _ = _metrics(tmp_path)
    table = T.build_table(TABLE, metrics, "small")
    layout = T.load_layout(TABLE)
    assert [ln.label for ln in table.lines if ln.label] == [r["label"] for r in layout["rows"]]
    poly = next(ln for ln in table.lines if ln.experiment == "sens_schedule_poly")
    assert poly.cells == ["21.5", "29.0", "+1.5", "-1.0"]
    thr = next(ln for ln in table.lines if ln.experiment == "sens_thresholds_mask2former")
    assert thr.values[2:] == pytest.approx([-3.0, 0.0])
    ref = next(ln for ln in table.lines if ln.experiment == "fisa")
    assert ref.cells[2:] == ["+0.0", "+0.0"]
    dense = next(ln for ln in table.lines if ln.experiment == "sens_loss_dense")
    assert set(dense.cells) == {T.MISSING}
    tex, md = T.to_latex(table), T.to_markdown(table)
    _check_latex_structure(tex, len(table.columns) + 2)
    assert "| +1.5 | -1.0 |" in md


def test_figure_bars_are_the_deltas(tmp_path):
    metrics, per_class = _metrics(tmp_path)
    inp = F.Inputs(preset="small", metrics=metrics, per_class=per_class, config=load_config(), results_dir=tmp_path)
    data = F.render(FIGURE, inp, tmp_path / "s.pdf", tmp_path / "s.png")
    _check_files(tmp_path, "s")
    got = data.set_index(["experiment", "metric"]).delta
    assert got[("sens_schedule_poly", "PQ")] == pytest.approx(1.5)
    assert got[("sens_schedule_poly", "mIoU")] == pytest.approx(-1.0)
    assert got[("sens_thresholds_mask2former", "PQ")] == pytest.approx(-3.0)
    assert pd.isna(got[("sens_loss_dense", "PQ")])  # not run
    assert "fisa" not in set(data.experiment)  # the reference is the zero line, not a bar
