"""The reproduction scorecard: every paper number judged, as a CSV and a one-page Markdown + PDF.

    python -m analysis.scorecard --preset small --config config.yaml \
        --metrics results/small/metrics.csv --out-csv results/small/reproduction/scorecard.csv \
        --out-md results/small/reproduction/scorecard.md --out-pdf results/small/reproduction/scorecard.pdf

`scorecard.csv` has one row per paper number of `analysis/paper_numbers.csv` (plus one per
ablation difference): `table, row, column, paper, mean, std, n, ci_low, ci_high, verdict,
basis`, then what the number was read as and where it came from (kind, experiment,
dataset, metric, metric_read, delta, tolerance, commit, config_hash, checkpoint_sha256,
dataset_checksum). Verdicts come from `analysis.verdicts`, exactly as the tables mark them.
Numbers of other methods (quoted by the paper, not re-run) and figure numbers the harness
cannot measure are `inconclusive`, with the reason in `basis`.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from analysis import plots
from analysis.aggregate import read_metrics, write_csv
from analysis.tables import LAYOUTS, TARGETS, read_yaml, load_layout, load_paper_numbers, paper_value
from analysis.verdicts import MARKS, VERDICTS, Settings, config_closeness, judge_layout
from fisa.metrics.semantic import MIOU_RULES
from fisa.utils.io import atomic_path, atomic_write_text

COLUMNS = ["table", "row", "column", "paper", "mean", "std", "n", "ci_low", "ci_high", "verdict", "basis"]
EXTRA_COLUMNS = ["kind", "experiment", "dataset", "metric", "metric_read", "delta", "tolerance",
                 "commit", "config_hash", "checkpoint_sha256", "dataset_checksum"]
NOT_RERUN = "another method's number, quoted by the paper, not re-run"


def table_targets() -> list[str]:
    """The table targets, in targets.yaml order."""
    return [t for t in read_yaml(str(TARGETS)) if t.startswith("table")]


def _figure_layouts(paper: pd.DataFrame) -> list[tuple[str, dict, Any]]:
    """(paper table, layout, paper_of) of each figure whose numbers layouts.yaml lets the scorecard judge."""
    out = []
    for fig, spec in ((read_yaml(str(LAYOUTS)).get("figures") or {}).items()):
        sc = spec.get("scorecard")
        if not sc:
            continue
        key = sc["paper_table"]
        derived = plots.oracle_paper_values(lambda t, r, c: paper_value(paper, t, r, c)) if key == "fig2a" else {}
        by_label = {label: exp for label, exp in sc["rows"].items()}

        def paper_of(row, column, key=key, derived=derived, by_label=by_label):
            v = paper_value(paper, key, row, column)
            return v if v is not None else derived.get((by_label.get(row), column))

        layout = {"columns": [{"label": m, "dataset": sc["dataset"], "metric": m} for m in sc["metrics"]],
                  "rows": [{"label": label, "experiment": exp, "paper_row": label} for label, exp in sc["rows"].items()]
                  + [{"label": e, "experiment": e} for e in sc.get("spread_from", [])],
                  "difference_to": sc.get("difference_to")}
        out.append((key, layout, paper_of))
    return out


def build_scorecard(metrics: pd.DataFrame, preset: str, settings: Settings, config: Mapping[str, Any] | None = None,
                    paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Judge every paper number against `metrics` (the rows of metrics.csv) of `preset`."""
    paper = load_paper_numbers() if paper is None else paper
    if "preset" in metrics and len(metrics):
        metrics = metrics[metrics.preset == preset]
    closeness = config_closeness(config, preset) if config is not None else None
    rows: list[dict] = []
    for target in table_targets():
        layout = load_layout(target)
        key = layout["paper_table"]
        exps = [r["experiment"] for r in layout["rows"] if r.get("experiment")]
        rows += judge_layout(key, layout, lambda r, c, key=key: paper_value(paper, key, r, c),
                             metrics[metrics.experiment.isin(exps)], settings, closeness)
    for key, layout, paper_of in _figure_layouts(paper):
        exps = [r["experiment"] for r in layout["rows"]]
        rows += [r for r in judge_layout(key, layout, paper_of, metrics[metrics.experiment.isin(exps)], settings,
                                         closeness)
                 if paper_value(paper, key, r["row"], r["column"]) is not None]  # derived ticks are no paper number
    numbers = set(zip(paper.table, paper.row, paper.column))
    for r in rows:  # a difference the paper states itself (Fig. 2a's gap) is one of its numbers
        if r["kind"] == "difference" and (r["table"], r["row"], r["column"]) in numbers:
            r["kind"] = "cell"
    judged = {(r["table"], r["row"], r["column"]) for r in rows}
    for p in paper.itertuples():
        if (p.table, p.row, p.column) in judged:
            continue
        reason = NOT_RERUN if p.table.startswith("table") else _figure_reason(p.table, p.row)
        rows.append({"table": p.table, "row": p.row, "column": p.column, "paper": float(p.value),
                     "mean": math.nan, "std": math.nan, "n": 0, "ci_low": math.nan, "ci_high": math.nan,
                     "verdict": "inconclusive", "basis": reason,
                     "kind": "quoted" if reason == NOT_RERUN else "cell"})
    df = pd.DataFrame(rows)
    for c in COLUMNS + EXTRA_COLUMNS:
        if c not in df:
            df[c] = math.nan if c in ("mean", "std", "ci_low", "ci_high", "delta", "tolerance") else ""
    df["n"] = df["n"].fillna(0).astype(int)
    return df[COLUMNS + EXTRA_COLUMNS]


def _figure_reason(table: str, row: str) -> str:
    if "MAFT+" in row:
        return "a gain over MAFT+, which the harness does not re-run"
    return "a figure number the scorecard does not judge (read it off the figure)"


# ---------------------------------------------------------------- the page


def _num(v: float, spec: str = ".1f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def headline(card: pd.DataFrame) -> str:
    """'N of M paper numbers reproduced' (M: the paper's numbers for what the harness runs)."""
    ours = card[(card.kind == "cell")]
    return f"{(ours.verdict == 'reproduced').sum()} of {len(ours)} paper numbers reproduced"


def reproduced_at(cells: pd.DataFrame, factor: float) -> int:
    """How many cells would be reproduced with `factor` times their tolerance (0: the bare interval)."""
    ok = cells.ci_low.notna() & cells.ci_high.notna()
    tol = factor * cells.tolerance.fillna(0)
    return int((ok & (cells.ci_low - tol <= cells.paper) & (cells.paper <= cells.ci_high + tol)).sum())


def headline_of_csv(path: str | Path) -> str:
    """The headline of a written scorecard.csv (the Snakemake report's label)."""
    return headline(pd.read_csv(path, keep_default_na=False))


def to_markdown(card: pd.DataFrame, preset: str, settings: Settings) -> str:
    """The one-page scorecard: headline, one line per table, every below/above cell, provenance."""
    cells, diffs, quoted = card[card.kind == "cell"], card[card.kind == "difference"], card[card.kind == "quoted"]
    counts = cells.verdict.value_counts()
    rule = settings.miou_rule
    out = [f"# Reproduction scorecard (preset `{preset}`)", "",
           f"**{headline(card)}**", "",
           "; ".join(f"{int(counts.get(v, 0))} {v}" for v in VERDICTS)
           + f". Ablation differences: {int((diffs.verdict == 'reproduced').sum())} of {len(diffs)} reproduced. "
           f"{len(quoted)} numbers of other methods are quoted by the paper, not re-run (not counted).", "",
           f"Rule: the paper's value is *reproduced* when it lies in our {settings.confidence:.0%} Student-t interval "
           f"of the mean over seeds, widened by ±{settings.tolerance_points:g} points "
           f"(±{settings.tolerance_relative:.0%} of the paper's value for efficiency numbers); *below*/*above*: "
           f"ours is lower/higher; *inconclusive*: no result or no seed spread. A one-seed number borrows the "
           f"spread of the closest experiment of its table with n>=3. mIoU read as `{rule}`: "
           f"{MIOU_RULES.get(rule, rule)}.", "",
           "Sensitivity to the tolerance: " + ", ".join(
               f"{reproduced_at(cells, f)} reproduced at {f:g}x" for f in (0, 1, 2)) + f" (of {len(cells)}).", "",
           "## Per table", "",
           "| table | numbers | reproduced | below | above | inconclusive | differences reproduced |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for table in dict.fromkeys(cells.table):
        c, d = cells[cells.table == table], diffs[diffs.table == table]
        vc = c.verdict.value_counts()
        out.append(f"| {table} | {len(c)} | " + " | ".join(str(int(vc.get(v, 0))) for v in VERDICTS)
                   + f" | {int((d.verdict == 'reproduced').sum())} of {len(d)} |" if len(d) else
                   f"| {table} | {len(c)} | " + " | ".join(str(int(vc.get(v, 0))) for v in VERDICTS) + " | - |")
    off = card[card.verdict.isin(["below", "above"])]
    out += ["", f"## Below or above the paper ({len(off)})", "",
            "| table | row | column | paper | ours (mean ± std, n) | Δ | 95 % interval | verdict |",
            "| --- | --- | --- | ---: | ---: | ---: | --- | --- |"]
    for r in off.itertuples():
        ours = _num(r.mean) + ("" if math.isnan(r.std) else f" ± {_num(r.std)}") + f", n={r.n}"
        out.append(f"| {r.table} | {r.row} | {r.column} | {r.paper:g} | {ours} | {_num(r.mean - r.paper, '+.1f')} | "
                   f"[{_num(r.ci_low)}, {_num(r.ci_high)}] | {r.verdict} {MARKS[r.verdict]} |")
    out += ["", "## Provenance", "",
            "Per experiment and dataset: the commit, config hash, checkpoint and dataset checksum (SHA-256 "
            "of the evaluated split's annotation files, `fisa.engine.provenance.dataset_checksum`) of the "
            "results behind its numbers, and the metrics as read (evaluator rule).", "",
            "| experiment | dataset | commit | config hash | checkpoint sha256 | dataset checksum | metrics read |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    judged = card[(card.kind == "cell") & (card.n > 0)]
    for (exp, dataset), g in judged.groupby(["experiment", "dataset"], sort=True, dropna=False):
        first = g.iloc[0]
        read = ", ".join(sorted(set(g.metric_read.astype(str)) - {"", "nan"}))
        out.append(f"| {exp} | {dataset} | {_short(first.commit, 10)} | {first.config_hash or 'unknown'} | "
                   f"{_short(first.checkpoint_sha256, 12)} | {_short(_bare(first.dataset_checksum), 12)} | "
                   f"{read or '-'} |")
    out += ["", f"Every number with its basis: `results/{preset}/reproduction/scorecard.csv`. "
                f"Regenerate: `snakemake scorecard --config preset={preset}`."]
    return "\n".join(out) + "\n"


def _bare(checksum: str) -> str:
    """Checksums without their algorithm prefix ("sha256:"), so that a short form shows the digest."""
    return "; ".join(t.strip().split(":", 1)[-1] for t in str(checksum or "").split(";")) if checksum else ""


def _short(text: str, n: int) -> str:
    text = str(text or "")
    if not text or text == "nan":
        return "not recorded"
    return "; ".join(t.strip()[:n] for t in text.split(";"))


def to_pdf(markdown: str, path: str | Path, max_lines_per_page: int = 90) -> int:
    """Render the Markdown text as monospaced PDF page(s) with matplotlib (no LaTeX); returns pages."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    width_in, height_in, margin_in = 8.27, 11.69, 0.5          # A4
    lines = []
    for line in markdown.splitlines():
        lines += textwrap.wrap(line, 150, subsequent_indent="    ") or [""]
    pages = [lines[i:i + max_lines_per_page] for i in range(0, len(lines), max_lines_per_page)] or [[]]
    longest = max((len(ln) for ln in lines), default=1)
    # monospace glyphs are ~0.6 em wide: the size at which the longest line and the lines fit the page
    size = min(8.0, 72 * (width_in - 2 * margin_in) / (0.6 * longest),
               72 * (height_in - 2 * margin_in) / (1.25 * max(len(p) for p in pages)))
    with atomic_path(path) as tmp, PdfPages(tmp) as pdf:
        for page in pages:
            fig = plt.figure(figsize=(width_in, height_in))
            fig.text(margin_in / width_in, 1 - margin_in / height_in, "\n".join(page), family="monospace",
                     fontsize=size, va="top", ha="left", linespacing=1.25)
            pdf.savefig(fig)
            plt.close(fig)
    return len(pages)


def to_html(markdown: str) -> str:
    """A standalone HTML page of the scorecard's Markdown (headings, paragraphs, tables, bold, code)."""
    import re
    from html import escape

    def inline(text: str) -> str:
        text = escape(text)
        text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
        text = re.sub(r"`(.+?)`", r"<code>\1</code>", text)
        return re.sub(r"\*(.+?)\*", r"<em>\1</em>", text)

    body, rows = [], []

    def flush():
        if rows:
            head, *rest = rows
            body.append("<table><thead><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr></thead><tbody>"
                        + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rest)
                        + "</tbody></table>")
            rows.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):  # skip the alignment row
                rows.append(cells)
            continue
        flush()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{inline(line[level:].strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
    flush()
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Reproduction scorecard</title>"
            "<style>body{font:13px sans-serif;max-width:70em}table{border-collapse:collapse}"
            "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def render(preset: str, metrics_csv: str | Path, config: Mapping[str, Any], out_csv: str | Path,
           out_md: str | Path | None = None, out_pdf: str | Path | None = None,
           out_html: str | Path | None = None) -> pd.DataFrame:
    """Build the scorecard of `preset` from a metrics.csv and write CSV, Markdown and PDF atomically."""
    settings = Settings.from_config(config, preset)
    card = build_scorecard(read_metrics(metrics_csv), preset, settings, config)
    write_csv(card, out_csv)
    md = to_markdown(card, preset, settings)
    if out_md:
        atomic_write_text(out_md, md)
    if out_pdf:
        to_pdf(md, out_pdf)
    if out_html:
        atomic_write_text(out_html, to_html(md))
    return card


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", required=True)
    p.add_argument("--config", required=True, help="config.yaml (presets.<P>.analysis, closeness of experiments)")
    p.add_argument("--metrics", required=True, help="results/<P>/metrics.csv")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", default=None)
    p.add_argument("--out-pdf", default=None)
    p.add_argument("--out-html", default=None, help="the page as HTML (what snakemake --report shows)")
    args = p.parse_args(argv)
    from fisa.config import load_config

    card = render(args.preset, args.metrics, load_config(args.config), args.out_csv, args.out_md, args.out_pdf,
                  args.out_html)
    print(f"{headline(card)} -> {args.out_csv}")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:  # a clear one-line error, no traceback
        raise SystemExit(f"analysis.scorecard: error: {err}")
