"""Render one figure target (PDF + PNG) from metrics.csv, per_class.csv and run files.

    python -m analysis.figures --target fig7_training_length --config config.yaml --preset small \
        --metrics results/small/metrics/fig7_training_length.csv --per-class results/small/per_class.csv \
        --results-dir results/small --out-pdf f.pdf --out-png f.png

Each `figure_<name>` builds a matplotlib figure and returns `(figure, data)`, where `data`
is what was plotted (a DataFrame, or for the qualitative panels the label maps shown).
What to compare with the paper is data (`analysis/layouts.yaml`, `figures:` section).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from analysis import plots
from analysis import qualitative as Q
from analysis.aggregate import PER_CLASS_COLUMNS, read_metrics, read_per_class
from analysis.tables import LAYOUTS, TARGETS, read_yaml, load_paper_numbers, paper_value
from fisa.utils.io import atomic_path


def empty_per_class() -> pd.DataFrame:
    """A per_class table with no rows (figures that do not read per-class results)."""
    return pd.DataFrame(columns=PER_CLASS_COLUMNS)


@dataclass
class Inputs:
    """Everything a figure may read."""

    preset: str
    metrics: pd.DataFrame
    per_class: pd.DataFrame = field(default_factory=lambda: empty_per_class())
    config: dict | None = None
    results_dir: Path | None = None
    paper: pd.DataFrame = field(default_factory=load_paper_numbers)
    dataset_factory: Callable[[str, dict], tuple[Any, list, int | None]] | None = None  # see _registry_dataset

    def paper_value(self, table: str, row: str, column: str) -> float | None:
        """One of the paper's numbers (None if not reported)."""
        return paper_value(self.paper, table, row, column)


def _spec(target: str) -> dict:
    return (read_yaml(str(LAYOUTS)).get("figures") or {}).get(target, {})


def _target(target: str) -> dict:
    return read_yaml(str(TARGETS))[target]


def figure_fig2a_oracle(inp: Inputs):
    """Fig. 2a: baseline vs oracle generator vs oracle classifier (PQ, mIoU on ADE150), paper values as ticks."""
    spec, tgt = _spec("fig2a_oracle"), _target("fig2a_oracle")
    fig, ax = plots.new_figure(2.4)
    data = plots.grouped_bars(ax, inp.metrics, spec["bars"], spec["labels"], spec["metrics"], tgt["datasets"][0],
                              plots.oracle_paper_values(inp.paper_value))
    plots.title(fig, f"Oracle analysis (preset {inp.preset})")
    return fig, data


def figure_fig2b_frozen_generator(inp: Inputs):
    """Fig. 2b: FISA with the frozen COCO generator vs a re-trained one (bars for what exists)."""
    spec, tgt = _spec("fig2b_frozen_generator"), _target("fig2b_frozen_generator")
    fig, ax = plots.new_figure(2.4)
    data = plots.grouped_bars(ax, inp.metrics, spec["bars"], spec["labels"], spec["metrics"], tgt["datasets"][0])
    plots.title(fig, f"Frozen vs re-trained mask generator (preset {inp.preset})")
    return fig, data


def figure_fig3_per_class_gains(inp: Inputs, top: int | None = 40):
    """Fig. 3: per-class IoU gain of `seve` over `baseline` on ADE150 classes absent from COCO's vocabulary."""
    tgt = _target("fig3_per_class_gains")
    reference, ours = tgt["experiments"][0], tgt["experiments"][1]
    gains = plots.per_class_gains(inp.per_class, ours, reference, tgt["datasets"][0])
    shown_n = len(gains) if top is None else min(top, len(gains))
    fig, ax = plots.new_figure(max(2.0, 0.12 * shown_n + 0.8))
    shown = plots.gains_bars(ax, gains, top, inp.paper_value("fig3", "seve - baseline", "max IoU gain"), ours, reference)
    plots.title(fig, f"ADE150 classes absent from COCO (preset {inp.preset})\n{shown_n} largest of {len(gains)} gains")
    return fig, shown


def _x_values(inp: Inputs, experiments: Sequence[str], key: str) -> dict[str, float]:
    from fisa.config import resolve_experiment

    if inp.config is None:
        raise ValueError("this figure needs --config (its x values come from the resolved experiments)")
    return {e: float(resolve_experiment(inp.config, e, inp.preset)["train"][key]) for e in experiments}


def _paper_points(inp: Inputs, spec: dict) -> dict[str, float]:
    out = {}
    for exp, ref in (spec.get("paper_points") or {}).items():
        v = inp.paper_value(ref["table"], ref["row"], ref["column"])
        if v is not None:
            out[exp] = v
    return out


def figure_fig7_training_length(inp: Inputs):
    """Fig. 7 (left): ADE150 PQ vs training iterations (log x), paper points beside the same experiments."""
    tgt, spec = _target("fig7_training_length"), _spec("fig7_training_length")
    xs = _x_values(inp, tgt["experiments"], "iterations")
    fig, ax = plots.new_figure(2.2)
    data = plots.sweep(ax, inp.metrics, xs, tgt["datasets"][0], "PQ", _paper_points(inp, spec), "training iterations")
    gain = inp.paper_value("fig7", "FISA - MAFT+", "PQ at 100 iterations")
    plots.title(fig, f"Training length (preset {inp.preset})\npaper: +{gain:g} PQ over MAFT+ at 100 iterations")
    return fig, data


def figure_fig7_data_size(inp: Inputs):
    """Fig. 7 (right): ADE150 PQ vs % of COCO-Panoptic train used (log x), paper points beside."""
    tgt, spec = _target("fig7_data_size"), _spec("fig7_data_size")
    xs = {e: 100.0 * v for e, v in _x_values(inp, tgt["experiments"], "data_fraction").items()}
    fig, ax = plots.new_figure(2.2)
    data = plots.sweep(ax, inp.metrics, xs, tgt["datasets"][0], "PQ", _paper_points(inp, spec),
                       "% of COCO-Panoptic train")
    gain = inp.paper_value("fig7", "FISA - MAFT+", "PQ at 0.1% data")
    plots.title(fig, f"Training data size (preset {inp.preset})\npaper: +{gain:g} PQ over MAFT+ with 0.1% of the data")
    return fig, data


def _registry_dataset(name: str, resolved: dict):
    """(dataset, class synonym lists, ignore label) from the registry, on the eval split."""
    from fisa.data.datasets import build_dataset
    from fisa.data.registry import get_meta

    meta = get_meta(name)
    split = getattr(meta, "eval_split", None) or "val"
    return build_dataset(name, split, resolved["data_root"]), list(meta.classes), getattr(meta, "ignore_label", 255)


def figure_qualitative(inp: Inputs, images: Sequence[str] | None = None, seed: int | None = None):
    """Qualitative panels on chosen ADE150 validation images: image, GT, FISA, baseline."""
    from fisa.config import resolve_experiment

    tgt = _target("qualitative")
    dataset_name, experiments = tgt["datasets"][0], tgt["experiments"]
    if inp.results_dir is None or inp.config is None:
        raise ValueError("the qualitative figure needs --results-dir and --config")
    if seed is None:
        from fisa.config import experiment_seeds

        seed = experiment_seeds(inp.config, experiments[0], inp.preset)[0]
    dirs = {e: Q.prediction_dir(inp.results_dir, e, seed, dataset_name) for e in experiments}
    for e, d in dirs.items():
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: no semantic predictions of {e!r} (seed {seed}) on {dataset_name}")
    stems = Q.choose_images(Q.common_stems(dirs.values()), int(tgt.get("images", 4)), images)
    if not stems:
        raise FileNotFoundError(f"no image predicted by all of {experiments} under {inp.results_dir}")
    factory = inp.dataset_factory or _registry_dataset
    dataset, classes, ignore = factory(dataset_name, resolve_experiment(inp.config, experiments[0], inp.preset))
    items = Q.find_items(dataset, stems)
    fig, axes = plots.new_figure(1.0 * len(stems) + 0.3, width_in=2 * plots.COLUMN_WIDTH_IN,
                                 ncols=2 + len(experiments))
    if len(stems) > 1:
        fig.clf()
        axes = fig.subplots(len(stems), 2 + len(experiments))
    shown = Q.panels(axes, {s: items[s] for s in stems}, dirs, Q.palette(len(classes)), ignore,
                     _spec("qualitative").get("labels"))
    plots.title(fig, f"{dataset_name} validation images, seed {seed} (preset {inp.preset})")
    return fig, shown


def figure_fig_fidelity_sensitivity(inp: Inputs):
    """Fidelity sensitivity: Δ PQ and Δ mIoU (ADE150) of each open choice's alternative against
    the defaults (`reference`), one horizontal bar pair per alternative; missing runs say so."""
    spec, tgt = _spec("fig_fidelity_sensitivity"), _target("fig_fidelity_sensitivity")
    rows = read_yaml(str(LAYOUTS))[spec["labels_from"]]["rows"]
    labels = {r["experiment"]: r["label"] for r in rows if r.get("experiment")}
    reference, dataset = spec["reference"], tgt["datasets"][0]
    alternatives = [e for e in tgt["experiments"] if e != reference]
    # twice the column width: the y labels name the alternatives
    fig, ax = plots.new_figure(0.25 * len(alternatives) + 1.0, width_in=2 * plots.COLUMN_WIDTH_IN)
    data = plots.delta_bars(ax, inp.metrics, alternatives, reference, labels, spec["metrics"], dataset)
    ax.set_title(f"Open choices: alternative vs defaults (preset {inp.preset})")
    return fig, data


FIGURES: dict[str, Callable] = {
    "fig_fidelity_sensitivity": figure_fig_fidelity_sensitivity,
    "fig2a_oracle": figure_fig2a_oracle,
    "fig2b_frozen_generator": figure_fig2b_frozen_generator,
    "fig3_per_class_gains": figure_fig3_per_class_gains,
    "fig7_training_length": figure_fig7_training_length,
    "fig7_data_size": figure_fig7_data_size,
    "qualitative": figure_qualitative,
}


def save(fig, out_pdf: str | Path | None, out_png: str | Path | None, dpi: int = 300) -> None:
    """Write the figure as PDF and PNG, atomically."""
    for path, fmt in ((out_pdf, "pdf"), (out_png, "png")):
        if path:
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=dpi)


def render(target: str, inp: Inputs, out_pdf=None, out_png=None, **kwargs):
    """Build `target` and write it; returns the plotted data."""
    import matplotlib.pyplot as plt

    if target not in FIGURES:
        raise KeyError(f"unknown figure target {target!r}; known: {sorted(FIGURES)}")
    fig, data = FIGURES[target](inp, **kwargs)
    save(fig, out_pdf, out_png)
    plt.close(fig)
    return data


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True, choices=sorted(FIGURES))
    p.add_argument("--preset", required=True)
    p.add_argument("--config", default=None, help="config.yaml (x values of Fig. 7, data root of the qualitative panels)")
    p.add_argument("--metrics", required=True)
    p.add_argument("--per-class", default=None)
    p.add_argument("--results-dir", default=None)
    p.add_argument("--images", nargs="*", default=None, help="qualitative: file stems to show (default: first N)")
    p.add_argument("--out-pdf", required=True)
    p.add_argument("--out-png", required=True)
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")  # the CLI runs headless (SLURM nodes, CI); notebooks keep their inline backend
    from fisa.config import load_config

    metrics = read_metrics(args.metrics)
    inp = Inputs(preset=args.preset, metrics=metrics[metrics.preset == args.preset],
                 per_class=read_per_class(args.per_class) if args.per_class else empty_per_class(),
                 config=load_config(args.config) if args.config else None,
                 results_dir=Path(args.results_dir) if args.results_dir else None)
    kwargs = {"images": args.images} if args.target == "qualitative" and args.images else {}
    render(args.target, inp, args.out_pdf, args.out_png, **kwargs)


if __name__ == "__main__":
    from fisa.utils.errors import run_cli

    run_cli(main)  # one `error: <file>: <what> — <fix>` line for a user-fixable error
