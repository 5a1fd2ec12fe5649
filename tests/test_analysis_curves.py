"""Training curves from losses.csv: what is plotted is what the CSV holds; text fits the canvas."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import curves as C
from analysis import plots
from fisa.config import load_config

PNG_MAGIC, PDF_MAGIC = b"\x89PNG\r\n\x1a\n", b"%PDF-"


def _losses(n: int, grad_norm: bool = True, start: float = 4.0) -> pd.DataFrame:
    """losses.csv as the engine writes it: iteration, lr, seconds, loss terms, grad_norm."""
    it = np.arange(n)
    df = pd.DataFrame({"iteration": it, "lr": 1e-2 * (1 - it / max(n, 1)) ** 0.9, "seconds": 0.1,
                       "loss_ce": start / (1 + it), "loss_dice": 2.0 / (1 + it), "loss_bce": 1.0 / (1 + it)})
    df["loss"] = 2 * df.loss_ce + 5 * df.loss_dice + 5 * df.loss_bce      # the weighted total the engine logs
    if grad_norm:
        df["grad_norm"] = 10.0 / (1 + it)
    return df


def _write_runs(root, runs: dict[tuple[str, int], pd.DataFrame | None]):
    for (exp, seed), df in runs.items():
        d = root / "runs" / exp / f"seed{seed}"
        d.mkdir(parents=True)
        if df is not None:
            df.to_csv(d / "losses.csv", index=False)


def test_run_figure_plots_every_column_present():
    fig, data = C.figure_run(_losses(20), "fisa, seed 0")
    assert data == {"panels": ["loss", "lr", "grad_norm"], "terms": ["loss_ce", "loss_dice", "loss_bce"]}
    loss_ax = fig.axes[0]
    ys = {ln.get_label(): ln.get_ydata() for ln in loss_ax.get_lines()}
    np.testing.assert_allclose(ys["loss_ce"], 4.0 / (1 + np.arange(20)))
    np.testing.assert_allclose(ys["total (weighted)"], (8.0 + 10.0 + 5.0) / (1 + np.arange(20)))
    np.testing.assert_allclose(fig.axes[2].get_lines()[0].get_ydata(), 10.0 / (1 + np.arange(20)))
    assert plots.text_outside(fig) == []
    # an older losses.csv without grad_norm: no panel, no error
    _, data = C.figure_run(_losses(5, grad_norm=False), "old run")
    assert data["panels"] == ["loss", "lr"]
    # a 0-iteration run: a figure that says so
    fig, data = C.figure_run(C.read_losses("/nonexistent/losses.csv"), "baseline, seed 0")
    assert data["panels"] == [] and any("no training iterations" in t.get_text() for t in fig.texts + fig.axes[0].texts)


def test_table_overview_and_per_run_files(tmp_path):
    config = load_config()
    runs = {("baseline", s): None for s in range(3)}                      # 0 iterations: no losses.csv
    runs.update({("seve", s): _losses(10, start=4.0 + s) for s in range(3)})
    runs.update({("seve_full_finetune", 0): _losses(10, grad_norm=False)})
    runs.update({("fisa", s): _losses(12) for s in range(3)})
    _write_runs(tmp_path, runs)
    out = tmp_path / "fig"
    C.main(["--target", "table3a_components", "--preset", "small", "--config", "config.yaml",
            "--results-dir", str(tmp_path), "--out-pdf", str(out / "t.pdf"), "--out-png", str(out / "t.png"),
            "--runs-dir", str(tmp_path / "curves")])
    assert (out / "t.pdf").read_bytes().startswith(PDF_MAGIC) and (out / "t.png").read_bytes().startswith(PNG_MAGIC)
    pngs = sorted(p.name for p in (tmp_path / "curves").iterdir())
    # one per run the table reads (the small preset's seed spread: 3 seeds each), with a CSV or not
    assert pngs == sorted(f"{e}_seed{s}.png" for e in ["baseline", "seve", "seve_full_finetune", "fisa"]
                          for s in range(3))
    data = C.render("table3a_components", "small", config, tmp_path)
    d = data.set_index("run")
    assert d.loc["baseline seed 0", "iterations"] == 0
    assert d.loc["seve seed 2", "iterations"] == 10
    assert d.loc["seve seed 2", "final_loss"] == pytest.approx((2 * 6.0 + 5 * 2.0 + 5 * 1.0) / 10)  # logged total
    no_total = _losses(4).drop(columns="loss")                    # a CSV without the total: sum of the terms
    assert C.total_loss(no_total).iloc[-1] == pytest.approx((4.0 + 2.0 + 1.0) / 4)
    fig, _ = C.figure_runs({k: C.read_losses(tmp_path / "runs" / k.split()[0] / f"seed{k.split()[-1]}" / "losses.csv")
                            for k in d.index}, "Training curves, table3a_components\n(preset small)")
    assert [ax.get_ylabel() for ax in fig.axes] == ["total loss", "lr", "grad norm"]
    assert plots.text_outside(fig) == []


def test_losses_without_iteration_column_is_named(tmp_path):
    (tmp_path / "losses.csv").write_text("step,loss\n0,1.0\n")
    with pytest.raises(ValueError, match=r"losses.csv: no 'iteration' column"):
        C.read_losses(tmp_path / "losses.csv")
