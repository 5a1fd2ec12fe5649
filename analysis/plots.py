"""The paper's metric figures (Fig. 2a, 2b, 3, 7) from metrics.csv / per_class.csv.

Every function draws on a matplotlib Axes and RETURNS the data it plotted (a pandas
DataFrame), so tests and notebooks check the figure against the metrics, not pixels.
Sizes follow a paper column (3.3 in wide, 8 pt text).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

COLUMN_WIDTH_IN = 3.3
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
         "xtick.labelsize": 7, "ytick.labelsize": 7, "pdf.fonttype": 42}  # fonttype 42: editable text in PDF
OURS, PAPER = "tab:blue", "tab:orange"


def new_figure(height_in: float = 2.2, width_in: float = COLUMN_WIDTH_IN, ncols: int = 1):
    """A column-width figure with the paper style."""
    plt.rcParams.update(STYLE)
    return plt.subplots(1, ncols, figsize=(width_in, height_in), constrained_layout=True)


def text_outside(fig, tolerance_px: float = 1.0) -> list[str]:
    """The visible texts of `fig` whose drawn extent leaves the canvas (clipped in the saved file).

    Draws the figure (layout included) and compares each text's window extent with the
    figure's; `[]` when every title, label, tick label, legend entry and annotation fits.
    """
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    undrawn = set()   # labels of ticks outside the view interval keep stale positions and are not drawn
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - 1e-9 * abs(hi - lo) <= tick.get_loc() <= hi + 1e-9 * abs(hi - lo):
                    undrawn |= {id(tick.label1), id(tick.label2)}
    out = []
    for t in fig.findobj(Text):
        if not t.get_visible() or not t.get_text().strip() or id(t) in undrawn:
            continue
        e = t.get_window_extent(renderer)
        if (e.x0 < box.x0 - tolerance_px or e.y0 < box.y0 - tolerance_px or e.x1 > box.x1 + tolerance_px
                or e.y1 > box.y1 + tolerance_px):
            out.append(t.get_text())
    return out


def title(fig, text: str) -> None:
    """A figure title centred on the canvas, each line wrapped to the figure's width (8 pt text)."""
    import textwrap

    chars = max(20, int(fig.get_figwidth() * 72 / (0.55 * STYLE["axes.titlesize"])) - 4)
    fig.suptitle("\n".join(textwrap.fill(line, chars) for line in text.splitlines()),
                 fontsize=STYLE["axes.titlesize"])


def summarise(metrics: pd.DataFrame, experiments: Sequence[str], dataset: str, metric: str) -> pd.DataFrame:
    """mean, sample std and n over seeds of `metric` on `dataset`, one row per experiment (NaN if missing)."""
    sel = metrics[metrics.experiment.isin(experiments) & (metrics.dataset == dataset) & (metrics.metric == metric)]
    g = sel.groupby("experiment").value.agg(["mean", "std", "count"])
    g = g.reindex(list(experiments))
    g["count"] = g["count"].fillna(0).astype(int)
    return g.rename(columns={"count": "n"}).reset_index()


def grouped_bars(ax, metrics: pd.DataFrame, experiments: Sequence[str], labels: Mapping[str, str],
                 metric_names: Sequence[str], dataset: str,
                 paper: Mapping[tuple[str, str], float] | None = None) -> pd.DataFrame:
    """Bars per metric group, one per experiment, ± std; paper values as markers. Missing -> 'not run'."""
    paper = paper or {}
    rows = []
    width = 0.8 / max(len(experiments), 1)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for gi, metric in enumerate(metric_names):
        s = summarise(metrics, experiments, dataset, metric)
        for ei, r in s.iterrows():
            x = gi + (ei - (len(experiments) - 1) / 2) * width
            exp = r.experiment
            pv = paper.get((exp, metric))
            if r.n:
                ax.bar(x, r["mean"], width, yerr=0 if np.isnan(r["std"]) else r["std"], capsize=2,
                       color=colors[ei % len(colors)], label=labels.get(exp, exp) if gi == 0 else None)
                ax.text(x, r["mean"] / 2, f"{r['mean']:.1f}", ha="center", va="center", fontsize=6,
                        rotation=90, color="white")  # inside the bar: the paper tick sits on top
            else:
                ax.bar(x, 0, width, color=colors[ei % len(colors)], label=labels.get(exp, exp) if gi == 0 else None)
                ax.text(x, 0, "not run", ha="center", va="bottom", rotation=90, fontsize=6)
            if pv is not None:
                ax.plot(x, pv, marker="_", markersize=12, mew=2, color="black",
                        label="paper" if not any(rr["paper"] is not None for rr in rows) else None)
            rows.append({"experiment": exp, "metric": metric, "x": x, "value": r["mean"], "std": r["std"],
                         "n": int(r.n), "paper": pv})
    ax.set_xticks(range(len(metric_names)), [f"{m} ({dataset})" for m in metric_names])
    ax.set_ylabel("%")
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    if isinstance(ax.figure.get_layout_engine(), ConstrainedLayoutEngine):
        ax.figure.legend(loc="outside lower center", ncol=2, frameon=False)  # below the axes: bars stay free
    else:  # "outside" placement needs constrained layout (e.g. a notebook's own figure)
        ax.legend(frameon=False, fontsize=6)
    return pd.DataFrame(rows)


def oracle_paper_values(paper_value) -> dict[tuple[str, str], float]:
    """Fig. 2a's paper values: the oracle classifier's, and the oracle generator's derived from the gap in the text."""
    out = {}
    for metric in ("PQ", "mIoU"):
        cls = paper_value("fig2a", "oracle classifier", metric)
        gap = paper_value("fig2a", "oracle classifier - oracle generator", metric)
        if cls is not None:
            out[("oracle_classifier", metric)] = cls
            if gap is not None:
                out[("oracle_generator", metric)] = round(cls - gap, 6)
    return out


def per_class_gains(per_class: pd.DataFrame, ours: str, reference: str, dataset: str = "ade150",
                    metric: str = "IoU", unseen_only: bool = True) -> pd.DataFrame:
    """Per-class `metric` of `ours` minus `reference` (means over seeds), unseen classes only, sorted by gain."""
    sel = per_class[(per_class.dataset == dataset) & (per_class.metric == metric)
                    & per_class.experiment.isin([ours, reference])]
    if unseen_only:
        sel = sel[~sel.seen.astype(bool)]
    wide = sel.groupby(["class", "experiment"]).value.mean().unstack("experiment")
    for exp in (ours, reference):
        if exp not in wide:
            wide[exp] = np.nan
    wide = wide.dropna(subset=[ours, reference])
    out = pd.DataFrame({"class": wide.index, ours: wide[ours].values, reference: wide[reference].values,
                        "gain": (wide[ours] - wide[reference]).values})
    return out.sort_values(["gain", "class"], ascending=[False, True]).reset_index(drop=True)


def gains_bars(ax, gains: pd.DataFrame, top: int | None, paper_max: float | None, ours: str, reference: str):
    """Horizontal bars of the largest gains; the paper's largest gain as a dashed line."""
    shown = gains if top is None else gains.head(top)
    y = np.arange(len(shown))[::-1]
    ax.barh(y, shown.gain, color=[OURS if g >= 0 else "tab:red" for g in shown.gain])
    ax.set_yticks(y, shown["class"])
    ax.set_xlabel(f"IoU gain, {ours} − {reference}")
    if paper_max is not None:
        ax.axvline(paper_max, ls="--", color=PAPER, lw=1, label=f"paper's largest gain ({paper_max:g})")
        ax.legend(loc="lower right", frameon=False)
    if shown.empty:
        ax.text(0.5, 0.5, "no per-class results for both experiments", ha="center", va="center",
                transform=ax.transAxes)
    return shown


def sweep(ax, metrics: pd.DataFrame, xs: Mapping[str, float], dataset: str, metric: str,
          paper_points: Mapping[str, float], xlabel: str) -> pd.DataFrame:
    """`metric` vs a swept setting (log x), mean ± std over seeds; paper points beside the same experiments."""
    s = summarise(metrics, list(xs), dataset, metric)
    s["x"] = [xs[e] for e in s.experiment]
    s["paper"] = [paper_points.get(e) for e in s.experiment]
    s = s.sort_values("x").reset_index(drop=True)
    have = s[s.n > 0]
    ax.errorbar(have.x, have["mean"], yerr=have["std"].fillna(0), marker="o", ms=3, capsize=2, color=OURS,
                label="reproduced")
    pp = s.dropna(subset=["paper"])
    if len(pp):
        ax.plot(pp.x, pp.paper, ls="none", marker="*", ms=7, color=PAPER, label="paper (same experiment)")
    for _, r in s[s.n == 0].iterrows():
        ax.axvline(r.x, color="0.8", lw=0.8, ls=":")
        ax.text(r.x, 0.02, "not run", rotation=90, fontsize=6, transform=ax.get_xaxis_transform())
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(s.x, [f"{x:g}" for x in s.x])  # label the swept values themselves, not powers of ten
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{metric} ({dataset})")
    ax.legend(frameon=False)
    return s


def delta_bars(ax, metrics: pd.DataFrame, experiments: Sequence[str], reference: str, labels: Mapping[str, str],
               metric_names: Sequence[str], dataset: str) -> pd.DataFrame:
    """Horizontal bars of mean(experiment) - mean(reference) per metric, one row per experiment
    (top to bottom in the given order); a missing run or reference is marked 'not run'."""
    rows = []
    height = 0.8 / max(len(metric_names), 1)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for mi, metric in enumerate(metric_names):
        s = summarise(metrics, [reference, *experiments], dataset, metric).set_index("experiment")
        ref = s.loc[reference, "mean"]
        for ei, exp in enumerate(experiments):
            y = ei + (mi - (len(metric_names) - 1) / 2) * height
            value = s.loc[exp, "mean"] - ref if s.loc[exp, "n"] and not np.isnan(ref) else np.nan
            ax.barh(y, 0 if np.isnan(value) else value, height, color=colors[mi % len(colors)],
                    label=f"Δ {metric}" if ei == 0 else None)
            if np.isnan(value):
                ax.text(0, y, " not run", va="center", fontsize=6)
            rows.append({"experiment": exp, "metric": metric, "y": y, "delta": value,
                         "value": s.loc[exp, "mean"], "reference": ref})
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_yticks(range(len(experiments)), [labels.get(e, e) for e in experiments])
    ax.invert_yaxis()
    ax.set_xlabel(f"Δ vs {reference} on {dataset} (points)")
    ax.legend(frameon=False, fontsize=6)
    return pd.DataFrame(rows)
