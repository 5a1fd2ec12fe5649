"""Render a paper table from `metrics.csv`: reproduced, paper and difference per cell.

The layout of every table (rows = experiments or other methods, columns = dataset x
metric) is data in `analysis/layouts.yaml`; the paper's numbers are in
`analysis/paper_numbers.csv`. For each reproduced row the table prints three lines:
the reproduced value (mean ± sample std over seeds, with n), the paper's value, and
the difference. Other methods' rows are printed as reported by the paper. A missing
result is the visible placeholder `missing`, never a dropped row.

    python -m analysis.tables --target table1_main --preset small \
        --metrics results/small/metrics.csv --out-tex t.tex --out-md t.md
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import pandas as pd
import yaml

from analysis.aggregate import read_metrics
from analysis.verdicts import MARKS, Settings, is_gpu, judge_layout, t_interval
from fisa.utils.io import atomic_write_text

HERE = Path(__file__).resolve().parent
PAPER_NUMBERS = HERE / "paper_numbers.csv"
LAYOUTS = HERE / "layouts.yaml"
TARGETS = HERE / "targets.yaml"

MISSING = "missing"       # a reproduced result that does not exist (yet)
NOT_REPORTED = "-"        # the paper gives no number for this cell
ANY_DATASET = "*"

SOURCE_PAPER_ONLY = "reported by the paper"
SOURCE_PAPER = "paper"
SOURCE_DIFF = "Δ (ours − paper)"
SOURCE_INTERVAL = "95 % t interval"
SOURCE_PROJECTED = "projected from FLOPs (snakemake budget)"
BORROWED = "*"            # after an interval computed with a borrowed seed spread (n = 1)


class LayoutError(ValueError):
    """The table layout or the paper numbers are inconsistent; the message names the key."""


@dataclass
class Projection:
    """`snakemake budget`'s projection of one experiment (a row of fisa.bench.budget) and the
    assumptions behind it, for a table whose layout has a `projection` (Table 2)."""

    row: dict                 # budget.csv's fields: gpu_hours, projected_fps, iterations, ...
    accelerator: str
    peak_flops: float
    utilisation: float
    source: str               # the shape rehearsal it was computed from (cited in the note)
    preset: str = ""          # whose `budget` settings it used


@dataclass
class Line:
    """One printed line of a table: a row label (empty on continuation lines), its source and cells."""

    label: str
    source: str
    cells: list[str]
    values: list[float | None]          # the numbers behind `cells` (None = placeholder / not reported)
    experiment: str | None = None
    n: list[int] = field(default_factory=list)   # seeds per cell (reproduced lines)
    device: str | None = None


@dataclass
class Table:
    """A rendered table, before formatting as LaTeX or Markdown."""

    target: str
    preset: str
    title: str
    columns: list[str]
    lines: list[Line]
    notes: list[str]
    settings: Settings | None = None    # verdict marks and intervals when given
    precision: str | None = None        # the precision of the device-dependent (efficiency) columns

    @property
    def caption(self) -> str:
        """The caption: what the table shows, from which preset, how to read the lines (and the marks)."""
        text = (f"{self.title}. Preset: {self.preset}. Reproduced lines: mean ± sample std over n seeds; "
                f"'{SOURCE_PAPER}': the paper's number; Δ = reproduced − paper; "
                f"'{MISSING}': no result yet; '{NOT_REPORTED}': not reported by the paper. "
                f"Rows marked '{SOURCE_PAPER_ONLY}' are other methods' numbers, not re-run.")
        if self.precision is not None:
            text += f" {self.precision}"
        if self.settings is None:
            return text
        st = self.settings
        return (text + f" Interval line: {st.confidence:.0%} Student-t interval of the mean over seeds "
                f"({BORROWED}: one seed, spread borrowed from the table's closest experiment with n ≥ 3). "
                f"Mark after Δ: {MARKS['reproduced']} reproduced (the paper's value lies in the interval "
                f"widened by ±{st.tolerance_points:g} points, ±{st.tolerance_relative:.0%} for efficiency "
                f"numbers), {MARKS['below']} below the paper, {MARKS['above']} above, "
                f"{MARKS['inconclusive']} inconclusive (no seed spread). mIoU: {st.miou_rule}.")

    def line(self, label: str, source_prefix: str) -> Line:
        """The line under row `label` whose source starts with `source_prefix` (for tests and notebooks)."""
        current = None
        for ln in self.lines:
            current = ln.label or current
            if current == label and ln.source.startswith(source_prefix):
                return ln
        raise KeyError(f"no line {source_prefix!r} under row {label!r} in {self.target}")


# ---------------------------------------------------------------- inputs


@lru_cache(maxsize=None)
def read_yaml(path: str) -> dict:
    """An analysis data file (layouts.yaml, targets.yaml), read once per process (shared: do not mutate)."""
    return yaml.safe_load(Path(path).read_text()) or {}


def load_paper_numbers(path: str | Path = PAPER_NUMBERS) -> pd.DataFrame:
    """The paper's numbers: columns table, row, column, value (float)."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(df.columns[:4]) != ["table", "row", "column", "value"]:
        raise LayoutError(f"{path}: expected columns table,row,column,value, got {list(df.columns)}")
    dup = df[df.duplicated(["table", "row", "column"], keep=False)]
    if len(dup):
        raise LayoutError(f"{path}: duplicated cells {dup[['table', 'row', 'column']].values.tolist()}")
    df["text"] = df["value"].str.strip()  # printed as transcribed (4760, not 4760.0)
    try:
        df["value"] = df["value"].astype(float)
    except ValueError as err:
        raise LayoutError(f"{path}: a value is not a number ({err})") from err
    return df


def paper_value(paper: pd.DataFrame, table: str, row: str, column: str) -> float | None:
    """One paper number, or None when the paper does not report it."""
    hit = paper[(paper.table == table) & (paper.row == row) & (paper.column == column)]
    return float(hit.value.iloc[0]) if len(hit) else None


def _paper_text(paper: pd.DataFrame, table: str, row: str, column: str) -> str:
    hit = paper[(paper.table == table) & (paper.row == row) & (paper.column == column)]
    if not len(hit):
        return NOT_REPORTED
    return str(hit.text.iloc[0]) if "text" in hit else format(float(hit.value.iloc[0]), "g")


def load_layout(target: str, layouts: str | Path = LAYOUTS, targets: str | Path = TARGETS) -> dict:
    """The layout of `target`, checked against `targets.yaml` (its experiments must be built for it)."""
    all_layouts = read_yaml(str(layouts))
    if target not in all_layouts:
        raise LayoutError(f"{layouts}: no table layout {target!r}; known: {sorted(all_layouts)}")
    layout = all_layouts[target]
    for key in ("paper_table", "title", "columns", "rows"):
        if key not in layout:
            raise LayoutError(f"{layouts}: {target}.{key} is missing")
    built = set((read_yaml(str(targets)).get(target) or {}).get("experiments", []))
    for row in layout["rows"]:
        exp = row.get("experiment")
        if exp is not None and exp not in built:
            raise LayoutError(f"{layouts}: {target} row {row['label']!r} reads experiment {exp!r}, "
                              f"which {targets} does not build for {target} ({sorted(built)})")
    return layout


# ---------------------------------------------------------------- building


def _fmt(value: float, spec: str) -> str:
    """`value` in the column's format; a nonzero value that the format would print as zero
    (the small preset's 0.03 M trainable parameters or 0.006 GPU hours under `.1f`) gets two
    significant digits instead, so a table never shows a measured quantity as 0."""
    text = format(value, spec)
    if value != 0 and float(text) == 0:
        text = format(value, ("+" if spec.startswith("+") else "") + ".2g")
    return text


def _cell_values(metrics: pd.DataFrame, experiment: str, column: dict, device: str | None,
                 settings: Settings | None = None) -> pd.Series:
    metric = column["metric"]
    if settings is not None and column["dataset"] != ANY_DATASET:
        from analysis.verdicts import metric_name

        metric = metric_name(metrics, experiment, column["dataset"], metric, settings.miou_rule)
    sel = metrics[(metrics.experiment == experiment) & (metrics.metric == metric)]
    if column["dataset"] != ANY_DATASET:
        sel = sel[sel.dataset == column["dataset"]]
    elif device is not None and column.get("device") == "inference":
        sel = sel[sel.device == device]
    return sel.value.astype(float).dropna() * float(column.get("scale", 1.0))


def _cell_stats(metrics: pd.DataFrame, experiment: str, column: dict, device: str | None,
                settings: Settings | None = None):
    if column.get("delta_from"):  # a difference of means to a reference experiment's cell
        plain = {k: v for k, v in column.items() if k != "delta_from"}
        mean, _, n = _cell_stats(metrics, experiment, plain, device, settings)
        ref, _, _ = _cell_stats(metrics, column["delta_from"], plain, device, settings)
        return (None if mean is None or ref is None else mean - ref), None, n
    vals = _cell_values(metrics, experiment, column, device, settings)
    if vals.empty:
        return None, None, 0
    std = float(vals.std(ddof=1)) if len(vals) > 1 else None
    return float(vals.mean()), std, int(len(vals))


def _cell_text(mean: float | None, std: float | None, spec: str) -> str:
    """`mean ± std` (no ± for a single seed), or the missing placeholder."""
    if mean is None:
        return MISSING
    return _fmt(mean, spec) + ("" if std is None else f" ± {_fmt(std, spec)}")


def _n_text(ns: list[int]) -> str:
    present = [n for n in ns if n]
    if not present:
        return "no results"
    lo, hi = min(present), max(present)
    return f"n={lo}" if lo == hi else f"n={lo}–{hi}"


def _devices(metrics: pd.DataFrame, experiment: str, layout: dict) -> list[str | None]:
    if not layout.get("split_by_device"):
        return [None]
    eff = {c["metric"] for c in layout["columns"] if c.get("device") == "inference"}
    sel = metrics[(metrics.experiment == experiment) & metrics.metric.isin(eff)]
    devices = sorted(set(sel.device.fillna("").astype(str)))
    return devices or [None]


def build_table(target: str, metrics: pd.DataFrame, preset: str, paper: pd.DataFrame | None = None,
                layouts: str | Path = LAYOUTS, targets: str | Path = TARGETS, settings: Settings | None = None,
                closeness=None, projection: Projection | None = None) -> Table:
    """Lay out `target` from tidy `metrics` (the rows of metrics.csv) and the paper's numbers.

    With `settings` (config `presets.<P>.analysis`) every reproduced line gets an interval
    line, each Δ a verdict mark (analysis.verdicts, as in the scorecard), and semantic mIoU
    columns read `settings.miou_rule`; `closeness` ranks lenders of a seed spread. With
    `projection` (layouts with a `projection` entry: Table 2), the projected line under its
    experiment's row and a note that says whether a GPU has measured that row.
    """
    layout = load_layout(target, layouts, targets)
    paper = load_paper_numbers() if paper is None else paper
    table_key = layout["paper_table"]
    columns = layout["columns"]
    labels = [c["label"] for c in columns]
    for row in layout["rows"]:
        if row.get("paper_row") and not any(paper_value(paper, table_key, row["paper_row"], l) is not None
                                            for l in labels):
            raise LayoutError(f"layout {target}: paper row {row['paper_row']!r} has no number in "
                              f"{table_key} of paper_numbers.csv")
    if "preset" in metrics and len(metrics):
        if not (metrics.preset == preset).any():
            raise LayoutError(f"metrics hold presets {sorted(set(metrics.preset))}, none is {preset!r}")
        metrics = metrics[metrics.preset == preset]
    judged = {}
    if settings is not None:
        judged = {(j["row"], j["column"]): j for j in judge_layout(
            table_key, layout, lambda r, c: paper_value(paper, table_key, r, c), metrics, settings, closeness)
            if j["kind"] == "cell"}
    lines: list[Line] = []
    notes: list[str] = []
    for row in layout["rows"]:
        exp, prow = row.get("experiment"), row.get("paper_row")
        paper_vals = [paper_value(paper, table_key, prow, l) if prow else None for l in labels]
        paper_cells = [_paper_text(paper, table_key, prow, l) if prow else NOT_REPORTED for l in labels]
        if exp is None:
            lines.append(Line(row["label"], SOURCE_PAPER_ONLY, paper_cells, paper_vals))
            continue
        first = True
        repro_lines = []
        for device in _devices(metrics, exp, layout):
            stats = [_cell_stats(metrics, exp, c, device, settings) for c in columns]
            cells = [_cell_text(m, s, c.get("fmt", ".1f")) for (m, s, _), c in zip(stats, columns)]
            source = "reproduced" + (f", {device or 'unknown device'}" if device is not None else "")
            source += f" ({_n_text([n for _, _, n in stats])})"
            ln = Line(row["label"] if first else "", source, cells, [m for m, _, _ in stats], exp,
                      [n for _, _, n in stats], device)
            first = False
            lines.append(ln)
            repro_lines.append(ln)
            if settings is not None:
                lines.append(_interval_line(metrics, exp, row["label"], columns, device, settings, judged))
        if prow:
            lines.append(Line("", SOURCE_PAPER, paper_cells, paper_vals, exp))
            for ln in repro_lines:
                diffs = [None if (m is None or p is None) else m - p for m, p in zip(ln.values, paper_vals)]
                cells = [NOT_REPORTED if d is None else _fmt(d, "+" + c.get("fmt", ".1f"))
                         for d, c in zip(diffs, columns)]
                if settings is not None:
                    cells = [cell if d is None or (row["label"], c["label"]) not in judged else
                             f"{cell} {MARKS[judged[(row['label'], c['label'])]['verdict']]}"
                             for cell, d, c in zip(cells, diffs, columns)]
                suffix = f", {ln.device or 'unknown device'}" if ln.device is not None else ""
                lines.append(Line("", SOURCE_DIFF + suffix, cells, diffs, exp, device=ln.device))
        if projection is not None and exp == (layout.get("projection") or {}).get("experiment"):
            lines.append(_projection_line(target, layout, projection, exp))
            notes.append(_projection_note(metrics, layout, projection, exp, row["label"]))
        notes += _provenance_notes(metrics, exp, row["label"])
    if layout.get("split_by_device"):
        notes[:0] = _device_notes(metrics, layout, [r["experiment"] for r in layout["rows"] if r.get("experiment")])
    precision = _precision_caption(metrics, layout, [r["experiment"] for r in layout["rows"] if r.get("experiment")]) \
        if layout.get("split_by_device") else None
    return Table(target, preset, layout["title"], labels, lines, notes, settings, precision)


def _projection_line(target: str, layout: dict, projection: Projection, experiment: str) -> Line:
    """The projected values under the experiment's row: layout `projection.columns` maps a
    column label to a budget.csv field; the column's `scale` and `fmt` apply."""
    fields = layout["projection"].get("columns") or {}
    labels = [c["label"] for c in layout["columns"]]
    unknown = sorted(set(fields) - set(labels))
    if unknown:
        raise LayoutError(f"layouts.yaml: {target}.projection.columns names {unknown}, not columns of the table "
                          f"({labels})")
    values, cells = [], []
    for c in layout["columns"]:
        field_ = fields.get(c["label"])
        if field_ is None:
            values.append(None)
            cells.append(NOT_REPORTED)
            continue
        if field_ not in projection.row:
            raise LayoutError(f"layouts.yaml: {target}.projection.columns.{c['label']}: {field_!r} is not a "
                              f"field of the budget ({projection.source}; fields: {sorted(projection.row)})")
        v = float(projection.row[field_]) * float(c.get("scale", 1.0))
        values.append(v)
        cells.append(_fmt(v, c.get("fmt", ".1f")))
    return Line("", SOURCE_PROJECTED, cells, values, experiment)


def _projection_note(metrics: pd.DataFrame, layout: dict, projection: Projection, experiment: str,
                     label: str) -> str:
    """Cite the projection, its assumptions, and whether a GPU has measured the row's inference."""
    cols = [c["metric"] for c in layout["columns"] if c.get("device") == "inference"]
    sel = metrics[(metrics.experiment == experiment) & metrics.metric.isin(cols)]
    devices = sorted(set(sel.device.fillna("").astype(str)) - {""})
    gpus = [d for d in devices if is_gpu(d)]
    text = (f"{label}, '{SOURCE_PROJECTED}': {experiment}'s FLOPs from the shape rehearsal ({projection.source}) "
            f"at {projection.utilisation:g} of the {projection.accelerator}'s peak bf16 {projection.peak_flops:.3g} "
            f"FLOP/s (presets.{projection.preset}.budget); its FPS counts the model alone (no post-processing or data "
            f"loading), an upper bound.")
    if gpus:
        return text + f" Measured on a GPU as well ({', '.join(gpus)}): the reproduced line is the measurement."
    measured = f"inference measured on: {', '.join(devices)}" if devices else "no efficiency record yet"
    return text + f" No GPU has measured {label} here ({measured}): the projection stands in for the real thing."


def read_projection(shapes_csv: str | Path, experiment: str, config: dict, preset: str) -> Projection:
    """`experiment`'s budget row computed from its shape rehearsal CSV (fisa.bench.budget's arithmetic)."""
    import csv

    from fisa.bench.budget import budget_rows

    with open(shapes_csv, newline="") as fh:
        shapes = [r for r in csv.DictReader(fh) if r["experiment"] == experiment]
    if not shapes:
        raise LayoutError(f"{shapes_csv}: no shape rehearsal of {experiment!r} (the layout's projection)")
    row = budget_rows(shapes, config, preset)[0]
    b = config["presets"][preset]["budget"]
    return Projection(row, str(b["accelerator"]), float(b["peak_bf16_flops"]), float(b["utilisation"]),
                      str(shapes_csv), preset)


def _precision_caption(metrics: pd.DataFrame, layout: dict, experiments: list[str]) -> str:
    """Which precision the inference columns (FPS, memory) were measured in, from the records'
    `provenance.precision` (efficiency.precision); several are named, never merged silently."""
    cols = [c for c in layout["columns"] if c.get("device") == "inference"]
    names = " and ".join(c["label"] for c in cols)
    sel = metrics[metrics.experiment.isin(experiments) & metrics.metric.isin([c["metric"] for c in cols])]
    found = sorted(set(sel.get("precision", pd.Series(dtype=str)).fillna("").astype(str)) - {""})
    if not found:
        return f"{names}: precision not recorded."
    if len(found) == 1:
        return f"{names} measured in {'bf16 autocast' if found[0] == 'bf16' else found[0]}."
    return f"WARNING: {names} measured in several precisions ({', '.join(found)})."


def _interval_line(metrics: pd.DataFrame, experiment: str, label: str, columns: list[dict], device: str | None,
                   settings: Settings, judged: dict) -> Line:
    """The interval of each cell: the verdict's (borrowed spread marked), else the seeds' own t interval."""
    cells, values = [], []
    for c in columns:
        j = judged.get((label, c["label"]))
        if j is not None and device is None:
            lo, hi, borrowed = j["ci_low"], j["ci_high"], j["n"] == 1
        else:
            vals = _cell_values(metrics, experiment, c, device, settings)
            st = t_interval(vals, settings.confidence)
            lo, hi, borrowed = st.ci_low, st.ci_high, False
        spec = c.get("fmt", ".1f")
        if pd.isna(lo):
            cells.append(NOT_REPORTED)
            values.append(None)
        else:
            cells.append(f"[{_fmt(lo, spec)}, {_fmt(hi, spec)}]" + (BORROWED if borrowed else ""))
            values.append((lo + hi) / 2)
    return Line("", SOURCE_INTERVAL, cells, values, experiment, device=device)


def _device_notes(metrics: pd.DataFrame, layout: dict, experiments: list[str]) -> list[str]:
    """Name the device behind every efficiency column; warn when several are involved."""
    notes = []
    sel = metrics[metrics.experiment.isin(experiments)]
    for kind, what in (("inference", "Inference"), ("train", "Training")):
        cols = [c for c in layout["columns"] if c.get("device") == kind]
        if not cols:
            continue
        names = ", ".join(c["label"] for c in cols)
        devices = sorted(set(sel[sel.metric.isin([c["metric"] for c in cols])].device.fillna("").astype(str)) - {""})
        if not devices:
            notes.append(f"{what} ({names}): device unknown (no efficiency record yet).")
        elif len(devices) == 1:
            notes.append(f"{what} ({names}) measured on: {devices[0]}.")
        elif kind == "inference":
            notes.append(f"WARNING: {what.lower()} ({names}) measured on several devices ({', '.join(devices)}); "
                         f"one line per device, never averaged across devices.")
        else:
            notes.append(f"WARNING: {what.lower()} ({names}) recorded on several devices ({', '.join(devices)}).")
    return notes


def _provenance_notes(metrics: pd.DataFrame, experiment: str, label: str) -> list[str]:
    sel = metrics[metrics.experiment == experiment]
    if sel.empty:
        return [f"{label} ({experiment}): no result yet."]
    commits = sorted(set(sel.commit.fillna("").astype(str)) - {""})
    hashes = sorted(set(sel.config_hash.fillna("").astype(str)) - {""})
    note = f"{label} ({experiment}): commit {', '.join(c[:10] for c in commits) or 'unknown'}; " \
           f"config {', '.join(hashes) or 'unknown'}."
    # config_hash includes the seed; the seedless hash (newer records) tells seeds of one config apart
    # from different configs pooled by mistake
    seedless = sorted(set(sel.get("config_hash_seedless", pd.Series(dtype=str)).fillna("").astype(str)) - {""})
    if len(seedless) > 1 or (not seedless and len(hashes) > 1):
        note += " WARNING: several configurations pooled." if seedless else \
            " WARNING: several config hashes pooled (records without config_hash_seedless: seeds or configs?)."
    return [note]


# ---------------------------------------------------------------- formatting


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials; ± − Δ – become math/text commands (the file stays ASCII)."""
    out = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)
    out = out.replace("<", "$<$").replace(">", "$>$")  # OT1 text mode would print < > as ¡ ¿
    return (out.replace("±", r"$\pm$").replace("−", "$-$").replace("Δ", r"$\Delta$").replace("–", "--")
            .replace("≈", r"$\approx$").replace("≥", r"$\geq$"))


def _latex_cell(text: str) -> str:
    if text == MISSING:
        return r"\textit{missing}"
    return latex_escape(text)


def to_latex(table: Table) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); row groups separated by \\addlinespace."""
    spec = "ll" + "c" * len(table.columns)
    out = [f"% Generated by analysis.tables ({table.target}, preset {table.preset}); do not edit by hand.",
           r"\begin{table}[t]", r"\centering", r"\small",
           rf"\caption{{{latex_escape(table.caption)}}}", rf"\label{{tab:{table.target}}}",
           rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
           " & ".join(["Method", "Source"] + [latex_escape(c) for c in table.columns]) + r" \\", r"\midrule"]
    for i, ln in enumerate(table.lines):
        if ln.label and i > 0 and (ln.experiment or table.lines[i - 1].experiment):
            out.append(r"\addlinespace")  # set reproduced groups (ours / paper / delta) apart
        out.append(" & ".join([latex_escape(ln.label), latex_escape(ln.source)] + [_latex_cell(c) for c in ln.cells])
                   + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        out.append(r"\par\smallskip\footnotesize " + r" \\ ".join(latex_escape(n) for n in table.notes))
    out += [r"\end{table}", ""]
    return "\n".join(out)


def _md_escape(text: str) -> str:
    return text.replace("|", r"\|")


def to_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table with the caption above and the provenance notes below."""
    out = [f"**{_md_escape(table.title)}** (preset `{table.preset}`)", "", _md_escape(table.caption), "",
           "| " + " | ".join(["Method", "Source"] + [_md_escape(c) for c in table.columns]) + " |",
           "| " + " | ".join(["---", "---"] + ["---:"] * len(table.columns)) + " |"]
    for ln in table.lines:
        cells = [f"**{MISSING}**" if c == MISSING else _md_escape(c) for c in ln.cells]
        out.append("| " + " | ".join([_md_escape(ln.label), _md_escape(ln.source)] + cells) + " |")
    if table.notes:
        out += [""] + [f"- {_md_escape(n)}" for n in table.notes]
    out += ["", f"Regenerate: `snakemake {table.target} --config preset={table.preset}`; every number's seed, "
                f"commit, config hash and device are in `results/{table.preset}/metrics.csv`."]
    return "\n".join(out) + "\n"


def to_html(table: Table) -> str:
    """A standalone HTML page of the table (what `snakemake --report` can show inline)."""
    from html import escape

    def cell(text: str, tag: str = "td") -> str:
        inner = f"<em>{MISSING}</em>" if text == MISSING else escape(text)
        return f"<{tag}>{inner}</{tag}>"

    head = "".join(cell(c, "th") for c in ["Method", "Source", *table.columns])
    body = []
    for ln in table.lines:
        style = ' class="group"' if ln.label else ""
        body.append(f"<tr{style}>" + "".join(cell(c) for c in [ln.label, ln.source, *ln.cells]) + "</tr>")
    notes = "".join(f"<li>{escape(n)}</li>" for n in table.notes)
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + escape(table.title) + "</title>"
            "<style>table{border-collapse:collapse;font:13px sans-serif}td,th{padding:2px 8px;text-align:right}"
            "td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}tr.group td{border-top:1px solid #999}"
            "thead th{border-bottom:2px solid #333}</style></head><body>"
            f"<p><strong>{escape(table.title)}</strong></p><p>{escape(table.caption)}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table><ul>{notes}</ul>"
            "</body></html>\n")


def render(target: str, preset: str, metrics_csv: str | Path, out_tex: str | Path | None = None,
           out_md: str | Path | None = None, out_html: str | Path | None = None, config: dict | None = None,
           projection_shapes: str | Path | None = None) -> Table:
    """Build `target` from a metrics.csv and write its LaTeX, Markdown (and HTML) files, atomically.

    With `config`, cells carry intervals and verdict marks (`presets.<P>.analysis`); with
    `projection_shapes` (and `config`), the layout's projection is computed from that shape
    rehearsal CSV."""
    settings = closeness = projection = None
    if config is not None:
        from analysis.verdicts import config_closeness

        settings, closeness = Settings.from_config(config, preset), config_closeness(config, preset)
    if projection_shapes is not None:
        experiment = (load_layout(target).get("projection") or {}).get("experiment")
        if experiment is None:
            raise LayoutError(f"--projection-shapes given, but layouts.yaml: {target} has no `projection`")
        if config is None:
            raise LayoutError("--projection-shapes needs --config (presets.<P>.budget: accelerator, peak, utilisation)")
        projection = read_projection(projection_shapes, experiment, config, preset)
    table = build_table(target, read_metrics(metrics_csv), preset, settings=settings, closeness=closeness,
                        projection=projection)
    if out_tex:
        atomic_write_text(out_tex, to_latex(table))
    if out_md:
        atomic_write_text(out_md, to_markdown(table))
    if out_html:
        atomic_write_text(out_html, to_html(table))
    return table


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True, help="e.g. table1_main (see analysis/layouts.yaml)")
    p.add_argument("--preset", required=True)
    p.add_argument("--metrics", required=True, help="results/<preset>/metrics.csv")
    p.add_argument("--out-tex", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-html", default=None, help="optional: an HTML page (for snakemake --report)")
    p.add_argument("--config", default=None,
                   help="config.yaml: adds intervals and verdict marks (presets.<P>.analysis); the workflow passes it")
    p.add_argument("--projection-shapes", default=None,
                   help="the shape rehearsal CSV of the layout's `projection` experiment "
                        "(results/<P>/budget/shapes/<E>.csv): its FLOPs projection under its row (Table 2)")
    args = p.parse_args(argv)
    config = None
    if args.config:
        from fisa.config import load_config

        config = load_config(args.config)
    render(args.target, args.preset, args.metrics, args.out_tex, args.out_md, args.out_html, config,
           args.projection_shapes)


if __name__ == "__main__":
    from fisa.utils.errors import run_cli

    run_cli(main)  # one `error: <file>: <what> — <fix>` line for a user-fixable error
