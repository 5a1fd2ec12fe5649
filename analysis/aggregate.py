"""Tidy every result JSON of a preset into `metrics.csv` and `per_class.csv`.

`metrics.csv`: one row per (experiment, seed, dataset, metric) with the provenance a
number is traced back with (commit, config hash, device). `per_class.csv`: one row per
(experiment, seed, dataset, class, metric) plus `seen` (class in the training
vocabulary, derived by `analysis.vocabulary`).

    python -m analysis.aggregate --preset small --eval-jsons results/small/eval/*/*/*.json \
        --efficiency-jsons results/small/efficiency/*.json \
        --metrics-out results/small/metrics.csv --per-class-out results/small/per_class.csv
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pandas as pd

from analysis import vocabulary
from fisa.utils.io import atomic_path

METRIC_COLUMNS = ["preset", "experiment", "seed", "dataset", "metric", "value",
                  "commit", "config_hash", "device", "checkpoint_sha256", "dataset_checksum",
                  "config_hash_seedless", "precision"]
# Provenance columns a metrics.csv written before they existed lacks (read back as "").
# precision: eval.precision / efficiency.precision of the record (fisa.engine.precision).
OPTIONAL_PROVENANCE = ("checkpoint_sha256", "dataset_checksum", "config_hash_seedless", "precision")
PER_CLASS_COLUMNS = ["preset", "experiment", "seed", "dataset", "class", "seen", "metric", "value",
                     "commit", "config_hash", "device"]
EFFICIENCY_DATASET = "efficiency"  # dataset column of an efficiency record that names none
# Efficiency numbers that come from the training run: their `device` is the training device
# (provenance.train_device), so Table 2 can name where GPU hours were spent.
TRAIN_METRICS = ("gpu_hours", "iterations")


class ResultFileError(ValueError):
    """A result JSON is unreadable or lacks a key; the message names the file and the key."""


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise ResultFileError(f"{path}: result file not found") from err
    except json.JSONDecodeError as err:
        raise ResultFileError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ResultFileError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _require(data: dict, key: str, path: Path, kind: type | tuple = object):
    if key not in data:
        raise ResultFileError(f"{path}: missing key {key!r}")
    if not isinstance(data[key], kind):
        raise ResultFileError(f"{path}: key {key!r} should be {getattr(kind, '__name__', kind)}, "
                              f"got {type(data[key]).__name__}")
    return data[key]


def _value(v, path: Path, where: str) -> float:
    if v is None:
        return math.nan  # a metric the evaluator could not compute (e.g. no thing classes)
    try:
        return float(v)
    except (TypeError, ValueError) as err:
        raise ResultFileError(f"{path}: {where} is not a number: {v!r}") from err


def _provenance(data: dict) -> dict:
    prov = data.get("provenance") or {}
    device = prov.get("device", "")
    if isinstance(device, (list, tuple)):  # several GPUs: keep them all, never one silently
        device = "; ".join(map(str, device))
    return {"commit": str(prov.get("commit", "") or ""), "config_hash": str(prov.get("config_hash", "") or ""),
            "device": str(device or ""), "checkpoint_sha256": str(prov.get("checkpoint_sha256") or ""),
            "dataset_checksum": str(prov.get("dataset_checksum") or ""),
            "config_hash_seedless": str(prov.get("config_hash_seedless") or ""),
            "precision": str(prov.get("precision") or "")}


def _seed(data: dict, path: Path) -> int:
    seed = data.get("seed", (data.get("provenance") or {}).get("seed", 0))
    try:
        return int(seed)
    except (TypeError, ValueError) as err:
        raise ResultFileError(f"{path}: key 'seed' is not an integer: {seed!r}") from err


def _check_preset(data: dict, path: Path, preset: str) -> None:
    if data.get("preset", preset) != preset:
        raise ResultFileError(f"{path}: preset {data.get('preset')!r} differs from --preset {preset!r}")


def eval_rows(path: Path, preset: str) -> tuple[list[dict], list[dict]]:
    """Metric rows and per-class rows (without `seen`) of one evaluation JSON."""
    data = _read_json(path)
    _check_preset(data, path, preset)
    base = {"preset": preset, "experiment": str(_require(data, "experiment", path, str)),
            "seed": _seed(data, path), "dataset": str(_require(data, "dataset", path, str))}
    prov = _provenance(data)
    metrics = _require(data, "metrics", path, dict)
    rows = [{**base, "metric": m, "value": _value(v, path, f"metrics.{m}"), **prov} for m, v in metrics.items()]
    per_class = []
    for cls, values in (data.get("per_class") or {}).items():
        if not isinstance(values, dict):
            raise ResultFileError(f"{path}: per_class.{cls} should be an object of metrics")
        per_class += [{**base, "class": cls, "metric": m, "value": _value(v, path, f"per_class.{cls}.{m}"), **prov}
                      for m, v in values.items()]
    return rows, per_class


def efficiency_rows(path: Path, preset: str) -> list[dict]:
    """Metric rows of one efficiency JSON (dataset = its `dataset` key, else 'efficiency')."""
    data = _read_json(path)
    _check_preset(data, path, preset)
    base = {"preset": preset, "experiment": str(_require(data, "experiment", path, str)),
            "seed": _seed(data, path), "dataset": str(data.get("dataset") or EFFICIENCY_DATASET)}
    prov = _provenance(data)
    train_device = (data.get("provenance") or {}).get("train_device")
    train_prov = {**prov, "device": str(train_device)} if train_device else prov
    return [{**base, "metric": m, "value": _value(v, path, f"metrics.{m}"),
             **(train_prov if m in TRAIN_METRICS else prov)}
            for m, v in _require(data, "metrics", path, dict).items()]


def _no_duplicates(rows: list[dict], sources: list[Path], keys: Sequence[str], what: str) -> None:
    seen: dict[tuple, Path] = {}
    for row, src in zip(rows, sources):
        key = tuple(row[k] for k in keys)
        if key in seen and seen[key] != src:
            raise ResultFileError(f"{what} {dict(zip(keys, key))} is reported by both {seen[key]} and {src}")
        seen[key] = src


def aggregate(preset: str, eval_jsons: Iterable[str | Path], efficiency_jsons: Iterable[str | Path] = (),
              classes_of: Callable[[str], list[list[str]]] | None = None,
              train_dataset: str = vocabulary.TRAIN_DATASET) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the result JSONs; return (metrics, per_class) tidy frames, sorted.

    `classes_of(dataset) -> synonym lists` supplies the vocabularies (default: the dataset
    registry); `seen` = the class shares a synonym with `train_dataset`'s vocabulary.
    """
    classes_of = classes_of or vocabulary.dataset_classes
    rows, sources, pc_rows, pc_sources = [], [], [], []
    for path in map(Path, eval_jsons):
        r, pc = eval_rows(path, preset)
        rows += r; sources += [path] * len(r)
        pc_rows += pc; pc_sources += [path] * len(pc)
    for path in map(Path, efficiency_jsons):
        r = efficiency_rows(path, preset)
        rows += r; sources += [path] * len(r)
    _no_duplicates(rows, sources, ["experiment", "seed", "dataset", "metric"], "metric")
    _no_duplicates(pc_rows, pc_sources, ["experiment", "seed", "dataset", "class", "metric"], "per-class metric")

    if pc_rows:
        train_classes = classes_of(train_dataset)
        flags: dict[tuple[str, str], bool] = {}
        for ds in sorted({r["dataset"] for r in pc_rows}):
            names = sorted({r["class"] for r in pc_rows if r["dataset"] == ds})
            for name, seen in vocabulary.seen_flags(names, classes_of(ds), train_classes).items():
                flags[(ds, name)] = seen
        for r in pc_rows:
            r["seen"] = flags[(r["dataset"], r["class"])]

    metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    metrics = metrics.sort_values(["experiment", "dataset", "metric", "seed"], kind="stable").reset_index(drop=True)
    per_class = pd.DataFrame(pc_rows, columns=PER_CLASS_COLUMNS)
    per_class = per_class.sort_values(["experiment", "dataset", "class", "metric", "seed"],
                                      kind="stable").reset_index(drop=True)
    return metrics, per_class


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    """Write a frame atomically (the workflow never sees half a CSV)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def _read_csv(path: str | Path, dtype: dict) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=dtype)
    except FileNotFoundError as err:
        raise ResultFileError(f"{path}: file not found") from err
    except pd.errors.EmptyDataError as err:
        raise ResultFileError(f"{path}: empty file (not written by analysis.aggregate?)") from err


def read_metrics(path: str | Path) -> pd.DataFrame:
    """Read `metrics.csv` with stable dtypes (commit hashes stay strings)."""
    df = _read_csv(path, {"commit": str, "config_hash": str, "device": str, "experiment": str,
                          "dataset": str, "metric": str, "preset": str, "checkpoint_sha256": str,
                          "dataset_checksum": str, "config_hash_seedless": str, "precision": str})
    for c in OPTIONAL_PROVENANCE:
        if c not in df.columns:
            df[c] = ""
    missing = [c for c in METRIC_COLUMNS if c not in df.columns]
    if missing:
        raise ResultFileError(f"{path}: missing columns {missing}")
    return df.fillna({c: "" for c in ("commit", "config_hash", "device") + OPTIONAL_PROVENANCE})


def read_per_class(path: str | Path) -> pd.DataFrame:
    """Read `per_class.csv` (`seen` as bool)."""
    df = _read_csv(path, {"commit": str, "config_hash": str, "device": str, "class": str,
                          "experiment": str, "dataset": str, "metric": str, "preset": str})
    missing = [c for c in PER_CLASS_COLUMNS if c not in df.columns]
    if missing:
        raise ResultFileError(f"{path}: missing columns {missing}")
    df["seen"] = df["seen"].astype(str).str.lower().eq("true")
    return df.fillna({"commit": "", "config_hash": "", "device": ""})


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", required=True)
    p.add_argument("--eval-jsons", nargs="*", default=[])
    p.add_argument("--efficiency-jsons", nargs="*", default=[])
    p.add_argument("--metrics-out", required=True)
    p.add_argument("--per-class-out", required=True)
    p.add_argument("--train-dataset", default=vocabulary.TRAIN_DATASET,
                   help="dataset whose vocabulary defines 'seen' classes (default: coco)")
    args = p.parse_args(argv)
    metrics, per_class = aggregate(args.preset, args.eval_jsons, args.efficiency_jsons,
                                   train_dataset=args.train_dataset)
    write_csv(metrics, args.metrics_out)
    write_csv(per_class, args.per_class_out)
    print(f"{len(metrics)} metric rows -> {args.metrics_out}; {len(per_class)} per-class rows -> {args.per_class_out}")


if __name__ == "__main__":
    from fisa.utils.errors import run_cli

    run_cli(main)  # one `error: <file>: <what> — <fix>` line for a user-fixable error
