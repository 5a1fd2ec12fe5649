"""Training curves from each run's `losses.csv`: one figure per run, one per table of all its runs.

`losses.csv` (fisa.engine.progress.LossLog) holds one row per iteration: `iteration`, `lr`,
`seconds`, the loss terms (`loss_ce`, `loss_dice`, `loss_bce`), the weighted total `loss`,
and (when the engine records it) `grad_norm`. Every column that
exists is plotted: loss terms (log y), learning rate, gradient norm; a missing column is a
missing panel, not an error. A run with no iteration (0-iteration variants) gets a figure
that says so.

    python -m analysis.curves --target table3a_components --preset small --config config.yaml \
        --results-dir results/small --out-pdf results/small/figures/curves/table3a_components.pdf \
        --out-png results/small/figures/curves/table3a_components.png --runs-dir results/small/curves/table3a_components
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from analysis import plots

TOTAL = "loss"            # the weighted sum of the terms, as the engine optimises it
NOT_TERMS = ("iteration", "lr", "seconds", "grad_norm", TOTAL)   # every other numeric column is a loss term
PANELS = ("loss", "lr", "grad_norm")


def read_losses(path: str | Path) -> pd.DataFrame:
    """A run's losses.csv (empty frame with an `iteration` column when the run logged none)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame({"iteration": pd.Series(dtype=int)})
    df = pd.read_csv(path)
    if "iteration" not in df:
        raise ValueError(f"{path}: no 'iteration' column (columns: {list(df.columns)})")
    return df.sort_values("iteration").reset_index(drop=True)


def loss_terms(losses: pd.DataFrame) -> list[str]:
    """The loss-term columns of a losses table (numeric, not iteration/lr/seconds/grad_norm/loss)."""
    return [c for c in losses.columns if c not in NOT_TERMS and pd.api.types.is_numeric_dtype(losses[c])]


def _panels(frames: Sequence[pd.DataFrame]) -> list[str]:
    present = ["loss"] if any(loss_terms(f) or TOTAL in f for f in frames) else []
    return present + [p for p in ("lr", "grad_norm") if any(p in f for f in frames)]


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def figure_run(losses: pd.DataFrame, title: str):
    """One run: loss terms, lr and grad norm against iteration; returns (figure, plotted columns)."""
    panels = _panels([losses]) if len(losses) else []
    fig, axes = _stacked(max(1, len(panels)))
    axes = list(axes) if hasattr(axes, "__len__") else [axes]
    if not panels:
        _empty(axes[0], "no training iterations")
    for ax, panel in zip(axes, panels):
        if panel == "loss":
            if TOTAL in losses:
                ax.plot(losses.iteration, losses[TOTAL], lw=1.0, color="black", label="total (weighted)")
            for term in loss_terms(losses):
                ax.plot(losses.iteration, losses[term], lw=0.8, label=term)
            ax.set_yscale("log")
            ax.set_ylabel("loss")
            ax.legend(frameon=False, ncol=2)
        else:
            ax.plot(losses.iteration, losses[panel], lw=0.8, color="0.2")
            ax.set_ylabel("lr" if panel == "lr" else "grad norm")
    axes[-1].set_xlabel("iteration")
    plots.title(fig, title)
    return fig, {"panels": panels, "terms": loss_terms(losses) if len(losses) else []}


def _stacked(n: int):
    import matplotlib.pyplot as plt

    plt.rcParams.update(plots.STYLE)
    return plt.subplots(n, 1, figsize=(plots.COLUMN_WIDTH_IN, 1.2 * n + 0.5), sharex=True, constrained_layout=True)


def total_loss(losses: pd.DataFrame) -> pd.Series:
    """The total loss per iteration: the logged weighted `loss`, else the sum of the logged terms."""
    if TOTAL in losses:
        return losses[TOTAL]
    terms = loss_terms(losses)
    return losses[terms].sum(axis=1) if terms else pd.Series(dtype=float)


def figure_runs(runs: Mapping[str, pd.DataFrame], title: str):
    """All runs of a table: total loss, lr, grad norm; one line per run. Returns (fig, data)."""
    frames = [f for f in runs.values() if len(f)]
    panels = _panels(frames)
    fig, axes = _stacked(max(1, len(panels)))
    axes = list(axes) if hasattr(axes, "__len__") else [axes]
    rows = []
    if not panels:
        _empty(axes[0], "no run of this table has training iterations")
    colors = plots.plt.rcParams["axes.prop_cycle"].by_key()["color"]
    experiments = list(dict.fromkeys(label.split()[0] for label in runs))   # one colour per experiment
    styles = ["-", "--", ":", "-."]                                          # one line style per seed
    for label, losses in runs.items():
        color = colors[experiments.index(label.split()[0]) % len(colors)]
        style = styles[sum(1 for other in list(runs)[:list(runs).index(label)]
                           if other.split()[0] == label.split()[0]) % len(styles)]
        if not len(losses):
            rows.append({"run": label, "iterations": 0, "final_loss": None})
            continue
        for ax, panel in zip(axes, panels):
            y = total_loss(losses) if panel == "loss" else losses.get(panel)
            if y is None or not len(y):
                continue
            ax.plot(losses.iteration, y, lw=0.8, color=color, ls=style, label=label if panel == panels[0] else None)
        tl = total_loss(losses)
        rows.append({"run": label, "iterations": int(losses.iteration.max()) + 1,
                     "final_loss": float(tl.iloc[-1]) if len(tl) else None})
    for ax, panel in zip(axes, panels):
        ax.set_ylabel({"loss": "total loss", "lr": "lr", "grad_norm": "grad norm"}[panel])
        if panel == "loss":
            ax.set_yscale("log")
    if panels:
        fig.legend(loc="outside lower center", ncol=2, frameon=False, fontsize=6)
    axes[-1].set_xlabel("iteration")
    plots.title(fig, title)
    return fig, pd.DataFrame(rows)


def table_runs(target: str, config: Mapping, preset: str, results_dir: str | Path) -> dict[str, Path]:
    """'<experiment> seed <S>' -> losses.csv of every run a table target reads (in targets.yaml order)."""
    from analysis.tables import TARGETS, read_yaml
    from fisa.config import experiment_seeds

    spec = read_yaml(str(TARGETS))[target]
    out = {}
    for exp in spec["experiments"]:
        for seed in experiment_seeds(config, exp, preset):
            out[f"{exp} seed {seed}"] = Path(results_dir) / "runs" / exp / f"seed{seed}" / "losses.csv"
    return out


def render(target: str, preset: str, config: Mapping, results_dir: str | Path, out_pdf=None, out_png=None,
           runs_dir: str | Path | None = None) -> pd.DataFrame:
    """Write the table's overview figure and (with `runs_dir`) one PNG per run; returns the overview data."""
    from analysis.figures import save

    runs = {label: read_losses(path) for label, path in table_runs(target, config, preset, results_dir).items()}
    if runs_dir is not None:
        Path(runs_dir).mkdir(parents=True, exist_ok=True)
        for label, losses in runs.items():
            exp, _, seed = label.split()
            fig, _ = figure_run(losses, f"{exp}, seed {seed} (preset {preset})")
            save(fig, None, Path(runs_dir) / f"{exp}_seed{seed}.png", dpi=150)
            plots.plt.close(fig)
    fig, data = figure_runs(runs, f"Training curves, {target}\n(preset {preset})")
    save(fig, out_pdf, out_png)
    plots.plt.close(fig)
    return data


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True, help="a table target of analysis/targets.yaml")
    p.add_argument("--preset", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--results-dir", required=True)
    p.add_argument("--out-pdf", required=True)
    p.add_argument("--out-png", required=True)
    p.add_argument("--runs-dir", default=None, help="also one PNG per run here")
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    from fisa.config import load_config

    render(args.target, args.preset, load_config(args.config), args.results_dir, args.out_pdf, args.out_png,
           args.runs_dir)


if __name__ == "__main__":
    try:
        main()
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:  # a clear one-line error, no traceback
        raise SystemExit(f"analysis.curves: error: {err}")
