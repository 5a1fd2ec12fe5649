"""Seed statistics and verdicts: is a reproduced number the paper's number, within noise?

Per table cell: mean, sample std (ddof 1), n seeds and a Student-t interval of the mean.
The paper's value is `reproduced` when it lies inside that interval widened by a tolerance
(`presets.<P>.analysis`, docs/analysis.md "Verdicts"), else `below` (ours is lower) or
`above`. A cell with one seed borrows the seed spread of the closest experiment of the same
table with n >= 3 on the same column and says so in `basis`; with none it is
`inconclusive`. Ablation tables (layouts.yaml `difference_to`) are also judged by their
differences (e.g. Tab. 3a: + SEVE - Baseline, paper +9.3 PQ): per seed when both rows share
at least two seeds, else unpaired (Welch).

Used by `analysis.tables` (a mark per cell) and `analysis.scorecard` (the CSV and the page),
so both give the same verdict for a cell.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

VERDICTS = ("reproduced", "below", "above", "inconclusive")
# One character per verdict, printed after the Δ of a cell (legend in every table caption).
MARKS = {"reproduced": "≈", "below": "<", "above": ">", "inconclusive": "?"}
MIOU = "mIoU"
MIN_SPREAD_N = 3          # an experiment lends its seed spread to n = 1 cells from this many seeds on


@dataclass(frozen=True)
class Settings:
    """How numbers are judged (config.yaml `presets.<P>.analysis`)."""

    tolerance_points: float     # widening of the interval for PQ / mIoU / IoU columns, in points
    tolerance_relative: float   # widening for efficiency columns (dataset "*"), share of the paper's value
    confidence: float           # of the Student-t interval (0.95)
    miou_rule: str              # which detectron2 mIoU rule a semantic "mIoU" column reads

    @classmethod
    def from_config(cls, config: Mapping[str, Any], preset: str) -> "Settings":
        """The preset's `analysis` section; a clear error naming the key when it is missing."""
        try:
            a = config["presets"][preset]["analysis"]
            return cls(float(a["tolerance_points"]), float(a["tolerance_relative"]), float(a["confidence"]),
                       str(a["miou_rule"]))
        except KeyError as err:
            raise ValueError(f"config: presets.{preset}.analysis.{err.args[0]} is missing "
                             f"(tolerance_points, tolerance_relative, confidence, miou_rule)") from None

    def tolerance(self, column: Mapping[str, Any], paper: float) -> float:
        """The tolerance of a column: points, or relative to the paper's value for efficiency numbers."""
        if column.get("dataset") == "*":
            return self.tolerance_relative * abs(paper)
        return self.tolerance_points


@dataclass(frozen=True)
class Stats:
    """mean, sample std, n and the Student-t interval of the mean (NaN where undefined)."""

    mean: float
    std: float
    n: int
    ci_low: float
    ci_high: float
    df: float = math.nan

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.ci_low) or math.isnan(self.ci_high))


def t_halfwidth(std: float, n: float, df: float, confidence: float) -> float:
    """Half width of the Student-t interval of a mean: t_{(1+c)/2, df} * std / sqrt(n)."""
    return float(stats.t.ppf((1 + confidence) / 2, df)) * std / math.sqrt(n)


def t_interval(values, confidence: float) -> Stats:
    """Stats of seed values: mean, sample std (ddof 1), n, and the t interval (n >= 2)."""
    v = np.asarray(pd.Series(values, dtype=float).dropna(), dtype=float)
    n = len(v)
    if n == 0:
        return Stats(math.nan, math.nan, 0, math.nan, math.nan)
    mean = float(v.mean())
    if n == 1:
        return Stats(mean, math.nan, 1, math.nan, math.nan)
    std = float(v.std(ddof=1))
    half = t_halfwidth(std, n, n - 1, confidence)
    return Stats(mean, std, n, mean - half, mean + half, float(n - 1))


def verdict(paper: float, s: Stats, tolerance: float) -> str:
    """reproduced: paper inside [ci_low - tol, ci_high + tol]; below: ours lower; above: ours higher."""
    if not s.has_interval:
        return "inconclusive"
    if s.ci_low - tolerance <= paper <= s.ci_high + tolerance:
        return "reproduced"
    return "below" if paper > s.ci_high + tolerance else "above"


# ---------------------------------------------------------------- reading seed values


def metric_name(metrics: pd.DataFrame, experiment: str, dataset: str, metric: str, miou_rule: str) -> str:
    """A semantic "mIoU" column reads the configured detectron2 rule where the records hold it
    (referring datasets have their own `mIoU`, and records from before both rules only `mIoU`)."""
    if metric != MIOU or miou_rule == MIOU:
        return metric
    has = metrics[(metrics.experiment == experiment) & (metrics.dataset == dataset) & (metrics.metric == miou_rule)]
    return miou_rule if len(has) else metric


def seed_values(metrics: pd.DataFrame, experiment: str, column: Mapping[str, Any], miou_rule: str) -> pd.Series:
    """One value per seed (index) of a layout column for `experiment`, scaled as the column says."""
    sel = metrics[metrics.experiment == experiment]
    if column["dataset"] != "*":
        sel = sel[sel.dataset == column["dataset"]]
        sel = sel[sel.metric == metric_name(metrics, experiment, column["dataset"], column["metric"], miou_rule)]
    else:
        sel = sel[sel.metric == column["metric"]]
    sel = sel.dropna(subset=["value"])
    return (sel.groupby("seed").value.mean() * float(column.get("scale", 1.0))).astype(float)


def devices_of(metrics: pd.DataFrame, experiment: str, column: Mapping[str, Any]) -> list[str]:
    """Devices that measured an inference-device column of `experiment` (never pooled)."""
    if column.get("device") != "inference":
        return []
    sel = metrics[(metrics.experiment == experiment) & (metrics.metric == column["metric"])]
    return sorted(set(sel.device.fillna("").astype(str)) - {""})


def is_gpu(device: str) -> bool:
    """A record's device name that is a GPU: fisa.engine.provenance.device_name writes
    "CPU: <model> (<n> threads)" for a CPU and the CUDA device's name otherwise."""
    return bool(device) and not device.startswith("CPU:")


def non_gpu_devices(metrics: pd.DataFrame, experiment: str, column: Mapping[str, Any]) -> list[str]:
    """For a column the paper measured on GPUs (layout `gpu_measure: true`: FPS, memory, GPU hours):
    the devices of `experiment`'s records when none of them is a GPU (else [])."""
    if not column.get("gpu_measure"):
        return []
    sel = metrics[(metrics.experiment == experiment) & (metrics.metric == column["metric"])]
    devices = sorted(set(sel.device.fillna("").astype(str)) - {""})
    return devices if devices and not any(is_gpu(d) for d in devices) else []


# ---------------------------------------------------------------- judging a table


def _provenance(metrics: pd.DataFrame, experiments: list[str], dataset: str | None = None) -> dict[str, str]:
    """commit, config hash, checkpoint sha256 and dataset checksum of the results behind a number
    (those of `experiments` on `dataset`; None or "*": any), each distinct value once, joined by '; '."""
    sel = metrics[metrics.experiment.isin(experiments)]
    if dataset not in (None, "*") and "dataset" in sel:  # "*": efficiency columns, any dataset
        sel = sel[sel.dataset == dataset]
    out = {}
    for key in ("commit", "config_hash", "checkpoint_sha256", "dataset_checksum"):
        vals = sorted(set(sel[key].fillna("").astype(str)) - {""}) if key in sel else []
        out[key] = "; ".join(vals)
    return out


def judge_layout(table: str, layout: Mapping[str, Any], paper_of: Callable[[str, str], float | None],
                 metrics: pd.DataFrame, settings: Settings,
                 closeness: Callable[[str, str], float] | None = None) -> list[dict]:
    """Every paper number of a table layout that a reproduced row stands beside, judged.

    `paper_of(paper_row, column_label)` gives the paper's value (None: not reported).
    `closeness(a, b)` ranks candidate lenders of a seed spread (smaller = closer; default:
    layout order). Returns scorecard rows (analysis.scorecard.COLUMNS plus kind, experiment,
    dataset, metric, delta, tolerance and provenance).
    """
    columns = layout["columns"]
    exp_rows = [r for r in layout["rows"] if r.get("experiment")]
    order = {r["experiment"]: i for i, r in enumerate(exp_rows)}
    values = {(r["experiment"], c["label"]): seed_values(metrics, r["experiment"], c, settings.miou_rule)
              for r in exp_rows for c in columns}
    rank = closeness or (lambda a, b: abs(order[a] - order[b]))

    def spread(experiment: str, column: dict) -> tuple[float, float, str] | None:
        """(std, df, lender) for a one-seed cell: the closest experiment of the table with n >= 3."""
        lenders = [r["experiment"] for r in exp_rows if r["experiment"] != experiment
                   and values[(r["experiment"], column["label"])].size >= MIN_SPREAD_N]
        if not lenders:
            return None
        lender = min(lenders, key=lambda e: (rank(experiment, e), order[e]))
        v = values[(lender, column["label"])]
        return float(v.std(ddof=1)), float(v.size - 1), lender

    def cell(experiment: str, column: dict) -> tuple[Stats, str]:
        v = values[(experiment, column["label"])]
        devices = devices_of(metrics, experiment, column)
        if len(devices) > 1:
            return t_interval([], settings.confidence), f"measured on several devices ({', '.join(devices)}); never pooled"
        s = t_interval(v, settings.confidence)
        cpu = non_gpu_devices(metrics, experiment, column)
        if s.n and cpu:
            # a CPU's FPS, memory or hours against the paper's GPUs: shown, never judged
            return (Stats(s.mean, s.std, s.n, math.nan, math.nan, s.df),
                    f"measured on {', '.join(cpu)}, not on a GPU as the paper: not comparable "
                    f"(Table 2 cites the FLOPs projection)")
        if s.n == 0:
            return s, "no result"
        if s.n >= 2:
            return s, f"{s.n} seeds, Student t ({s.df:g} df)"
        lent = spread(experiment, column)
        if lent is None:
            return s, f"n=1 and no experiment of this table has n>={MIN_SPREAD_N} on this column"
        std, df, lender = lent
        half = t_halfwidth(std, 1, df, settings.confidence)
        return (Stats(s.mean, std, 1, s.mean - half, s.mean + half, df),
                f"n=1; seed spread borrowed from {lender} (std {std:.3g}, n={int(df) + 1}), "
                f"the closest experiment of this table with n>={MIN_SPREAD_N}")

    out = []
    for r in exp_rows:
        exp = r["experiment"]
        for c in columns:
            p = paper_of(r["paper_row"], c["label"]) if r.get("paper_row") else None
            if p is None:
                continue
            s, basis = cell(exp, c)
            tol = settings.tolerance(c, p)
            out.append(_row(table, r["label"], c, p, s, verdict(p, s, tol), basis, "cell", exp, tol,
                            metric_name(metrics, exp, c["dataset"], c["metric"], settings.miou_rule),
                            _provenance(metrics, [exp], c.get("dataset"))))
    ref_label = layout.get("difference_to")
    if ref_label:
        ref = next((r for r in exp_rows if r["label"] == ref_label), None)
        if ref is None:
            raise ValueError(f"layout of {table}: difference_to {ref_label!r} is not a reproduced row")
        for r in exp_rows:
            if r is ref:
                continue
            for c in columns:
                pa = paper_of(r["paper_row"], c["label"]) if r.get("paper_row") else None
                pb = paper_of(ref["paper_row"], c["label"]) if ref.get("paper_row") else None
                if pa is None or pb is None:
                    continue
                p = round(pa - pb, 6)
                s, basis = _difference(r["experiment"], ref["experiment"], c, values, cell, settings)
                tol = settings.tolerance(c, pa)
                out.append(_row(table, f"{r['label']} - {ref['label']}", c, p, s, verdict(p, s, tol), basis,
                                "difference", f"{r['experiment']} - {ref['experiment']}", tol,
                                metric_name(metrics, r["experiment"], c["dataset"], c["metric"], settings.miou_rule),
                                _provenance(metrics, [r["experiment"], ref["experiment"]], c.get("dataset"))))
    return out


def _difference(a: str, b: str, column: dict, values: dict, cell, settings: Settings) -> tuple[Stats, str]:
    """Stats of `a - b` on a column: paired by seed (>= 2 shared seeds), else unpaired (Welch)."""
    va, vb = values[(a, column["label"])], values[(b, column["label"])]
    shared = va.index.intersection(vb.index)
    if len(shared) >= 2:
        s = t_interval(va[shared] - vb[shared], settings.confidence)
        return s, f"paired by seed ({len(shared)} shared seeds), Student t ({s.df:g} df)"
    (sa, basis_a), (sb, basis_b) = cell(a, column), cell(b, column)
    if sa.n == 0 or sb.n == 0:
        return Stats(math.nan, math.nan, 0, math.nan, math.nan), "no result for one of the two rows"
    mean = sa.mean - sb.mean
    if math.isnan(sa.std) or math.isnan(sb.std):
        return Stats(mean, math.nan, min(sa.n, sb.n), math.nan, math.nan), \
            f"no seed spread for one of the two rows ({a}: {basis_a}; {b}: {basis_b})"
    va_, vb_ = sa.std ** 2 / sa.n, sb.std ** 2 / sb.n
    se = math.sqrt(va_ + vb_)
    df = (va_ + vb_) ** 2 / (va_ ** 2 / sa.df + vb_ ** 2 / sb.df) if se > 0 else min(sa.df, sb.df)
    half = t_halfwidth(se, 1, df, settings.confidence)
    return (Stats(mean, se, min(sa.n, sb.n), mean - half, mean + half, df),
            f"unpaired (Welch, {df:.3g} df); std is the standard error of the difference "
            f"({a}: {basis_a}; {b}: {basis_b})")


def _row(table: str, row: str, column: dict, paper: float, s: Stats, v: str, basis: str, kind: str,
         experiment: str, tolerance: float, metric_read: str, prov: dict) -> dict:
    return {"table": table, "row": row, "column": column["label"], "paper": paper, "mean": s.mean, "std": s.std,
            "n": s.n, "ci_low": s.ci_low, "ci_high": s.ci_high, "verdict": v, "basis": basis, "kind": kind,
            "experiment": experiment, "dataset": column["dataset"], "metric": column["metric"],
            "metric_read": metric_read, "delta": s.mean - paper if s.n else math.nan, "tolerance": tolerance, **prov}


def config_closeness(config: Mapping[str, Any], preset: str) -> Callable[[str, str], float]:
    """Closeness of two experiments: how many resolved settings (model, train) differ."""
    from fisa.config import resolve_experiment

    cache: dict[str, dict] = {}

    def leaves(experiment: str) -> dict:
        if experiment not in cache:
            r = resolve_experiment(config, experiment, preset)
            flat = pd.json_normalize({"variant": r["variant"], "model": r["model"], "train": r["train"]}, sep=".")
            cache[experiment] = {k: repr(v) for k, v in flat.iloc[0].items()}
        return cache[experiment]

    def distance(a: str, b: str) -> float:
        la, lb = leaves(a), leaves(b)
        return float(sum(la.get(k) != lb.get(k) for k in set(la) | set(lb)))

    return distance
