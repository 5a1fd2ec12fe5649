"""The real rehearsal's plan and report: the paper's rules at paper shapes, once per distinct model.

    snakemake --cores 2 --keep-going rehearsal --config preset=rehearsal   # runs the plan, writes the report
    python -m fisa.bench.rehearsal --preset rehearsal                       # the report of what ran so far

`all_tables` under the `rehearsal` preset trains 38 runs and evaluates 61 (experiment, dataset)
pairs, but most of them repeat a model at the same shapes: `fisa`, `fisa_main`, the adapter
depths, `iters_*` and `data_*` all train FISA with ViT-L-14-336 and the Swin-B Mask2Former at
crop 1024. What the rehearsal must show (the model builds, a training step fits and runs, each
dataset format is read and scored at paper resolution) needs each of them once:

- **one run per distinct model**: experiments are grouped by (variant, backbone, generator); a
  group's representative is its member with the most datasets (ties: config order). LoRA ranks
  and adapter depths change widths, not code paths; the shape rehearsal
  (`python -m fisa.bench.rehearse`) covers every experiment's shapes on the meta device.
- **one evaluation per representative** (ADE-150 where it evaluates it, else its first dataset),
  then **one evaluation per dataset not yet covered**, by the first representative that trains
  (iterations > 0) and lists it, else the first that lists it, else the first experiment that
  lists it (which then also trains);
- **the efficiency measurement** of the experiments Table 2 measures.

`report()` reads what ran: per planned job its status (done, failed with the log's last error
line, or not run), wall time, CPU time and peak RSS from Snakemake's benchmark files
(`results/<preset>/benchmarks/<rule>/...tsv`). Jobs must start cold (`warm_start: false` in the
rehearsal preset): a warm-started job's benchmark measures only the client process.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

REFERENCE_DATASET = "ade150"   # every table evaluates it; the representatives' common ground
BENCH_COLUMNS = {"s": "wall_s", "cpu_time": "cpu_s", "max_rss": "max_rss_mb"}
REPORT_COLUMNS = ("rule", "job", "experiment", "dataset", "status", "wall_s", "cpu_s", "max_rss_mb", "note")


@dataclass
class Plan:
    """What the rehearsal runs: representatives (experiment -> the experiments it stands for),
    (experiment, dataset) evaluations, efficiency experiments."""
    representatives: dict[str, list[str]] = field(default_factory=dict)
    evaluations: list[tuple[str, str]] = field(default_factory=list)
    efficiency: list[str] = field(default_factory=list)
    iterations: dict[str, int] = field(default_factory=dict)
    # each planned job with its output, benchmark and log paths: filled in by the workflow from
    # the rules' own patterns (workflow/rules/rehearsal.smk; `planned_jobs`), which own the layout
    jobs: list[dict] = field(default_factory=list)

    @property
    def trainings(self) -> list[str]:
        """Every run the plan needs (zero-iteration ones only build the model and its run folder)."""
        return list(self.representatives)


def rehearsal_plan(config: Mapping[str, Any], preset: str, experiments: list[str],
                   efficiency: list[str] = (), resolved: Mapping[str, Mapping] | None = None) -> Plan:
    """The deduplicated plan over `experiments` (those in scope, config order); see the module doc.
    `resolved`: each experiment's resolved config where the caller has it (the workflow's run
    configs), else resolved here."""
    from fisa.config import resolve_experiment

    if resolved is None:
        resolved = {name: resolve_experiment(config, name, preset) for name in experiments}
    trainable = [n for n in experiments if not config["experiments"][n].get("weights_from")]
    groups: dict[tuple, list[str]] = {}
    for name in trainable:
        r = resolved[name]
        groups.setdefault((r["variant"], r["model"]["backbone"], r["model"]["generator"]), []).append(name)
    plan = Plan()
    for members in groups.values():
        rep = max(members, key=lambda n: len(resolved[n]["datasets"]))  # max keeps the first of ties
        plan.representatives[rep] = members
    plan.iterations = {n: int(resolved[n]["train"]["iterations"]) for n in plan.representatives}

    covered: set[str] = set()
    for rep in plan.representatives:
        datasets = resolved[rep]["datasets"]
        if datasets:
            ds = REFERENCE_DATASET if REFERENCE_DATASET in datasets else datasets[0]
            plan.evaluations.append((rep, ds))
            covered.add(ds)
    every = [ds for n in experiments for ds in resolved[n]["datasets"]]
    for ds in dict.fromkeys(every):
        if ds in covered:
            continue
        listing = [n for n in plan.representatives if ds in resolved[n]["datasets"]]
        training = [n for n in listing if plan.iterations[n] > 0]
        if training or listing:
            chosen = (training or listing)[0]
        else:       # only a non-representative lists it: it runs too
            chosen = next(n for n in trainable if ds in resolved[n]["datasets"])
            plan.representatives[chosen] = [chosen]
            plan.iterations[chosen] = int(resolved[chosen]["train"]["iterations"])
        plan.evaluations.append((chosen, ds))
        covered.add(ds)
    plan.efficiency = [e for e in efficiency if e in resolved]
    return plan


# ---- the report ---------------------------------------------------------------------------
def read_benchmark(path: Path) -> dict[str, str]:
    """The figures of a Snakemake benchmark file (the last repeat), as text rounded for a table."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        return {}
    last = rows[-1]
    out = {}
    for src, dst in BENCH_COLUMNS.items():
        try:
            out[dst] = f"{float(last[src]):.0f}"
        except (KeyError, TypeError, ValueError):
            out[dst] = ""
    return out


def last_error(log: Path) -> str:
    """The log's last line that names an error (else its last line)."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    for ln in reversed(lines):
        if "error" in ln.lower() or ln.startswith("Traceback"):
            return ln[:200]
    return lines[-1][:200] if lines else ""


def planned_jobs(plan: Plan, seed_of, paths) -> list[dict]:
    """Every planned job in the order they run: rule, job, experiment, dataset, note, and the
    `output`, `bench` and `log` paths `paths(rule, wildcards)` gives (the workflow passes its
    rules' own patterns, so the layout is defined once, by the rules). `seed_of(experiment)`:
    the seed its run and evaluations use (the workflow: the experiment's first seed)."""
    jobs = []

    def add(rule, job, note="", **wildcards):
        jobs.append(dict(rule=rule, job=job, experiment=wildcards["experiment"],
                         dataset=wildcards.get("dataset", ""), note=note, **paths(rule, wildcards)))

    for exp in plan.trainings:
        seed = seed_of(exp)
        add("train", f"{exp}/seed{seed}", experiment=exp, seed=seed,
            note=f"{plan.iterations.get(exp, 0)} iterations; stands for " + ", ".join(plan.representatives[exp]))
    for exp, ds in plan.evaluations:
        seed = seed_of(exp)
        add("evaluate", f"{exp}/seed{seed}/{ds}", experiment=exp, seed=seed, dataset=ds)
    for exp in plan.efficiency:
        add("efficiency", exp, experiment=exp)
    return jobs


def report(plan: Plan, root: str | Path = ".") -> list[dict]:
    """One row per planned job (`plan.jobs`): status, wall/CPU seconds and peak RSS (MB) from its
    benchmark. The jobs' paths are relative to `root` (the workflow's working directory)."""
    rows = []
    for job in plan.jobs:
        output, log, bench = (Path(root) / job[k] for k in ("output", "log", "bench"))
        row = {k: job[k] for k in ("rule", "job", "experiment", "dataset", "note")}
        if output.exists():
            row["status"] = "done"
        elif log.exists():
            row["status"] = "failed or running: " + (last_error(log) or "see " + str(job["log"]))
        else:
            row["status"] = "not run"
        if bench.exists():
            row.update(read_benchmark(bench))
        rows.append(row)
    return rows


def render(rows: list[dict], preset: str) -> tuple[str, str]:
    """(csv text, markdown text) of the report rows."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=REPORT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: r.get(c, "") for c in REPORT_COLUMNS})
    done = sum(r["status"] == "done" for r in rows)
    cpu = sum(float(r["cpu_s"]) for r in rows if r.get("cpu_s"))
    lines = [f"Rehearsal of preset `{preset}`: {done} of {len(rows)} planned jobs done; "
             f"{cpu:.0f} CPU-s in their benchmarks (`snakemake rehearsal`, fisa.bench.rehearsal)", "",
             "| rule | job | status | wall s | CPU s | peak RSS MB | note |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['rule']} | {r['job']} | {r['status']} | {r.get('wall_s', '')} | {r.get('cpu_s', '')} "
                     f"| {r.get('max_rss_mb', '')} | {r['note']} |")
    return buf.getvalue(), "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="rehearsal")
    ap.add_argument("--plan", default=None, help="the plan JSON the workflow wrote (default: results/<preset>/rehearsal/plan.json)")
    ap.add_argument("--results", default=None, help="default: results/<preset>")
    ap.add_argument("--root", default=".", help="the workflow's working directory (the plan's paths are relative to it)")
    ap.add_argument("--output", default=None, help="CSV (default: results/<preset>/rehearsal/report.csv)")
    ap.add_argument("--markdown", default=None, help="default: beside --output, .md")
    args = ap.parse_args(argv)
    results = Path(args.results or f"results/{args.preset}")
    plan_path = Path(args.plan or results / "rehearsal" / "plan.json")
    if not plan_path.exists():
        raise FileNotFoundError(f"{plan_path}: no rehearsal plan; run `snakemake rehearsal_plan --config "
                                f"preset={args.preset}` (or the `rehearsal` target) first")
    plan = load_plan(plan_path)
    rows = report(plan, args.root)
    csv_text, md = render(rows, args.preset)
    out = Path(args.output or results / "rehearsal" / "report.csv")
    from fisa.utils.io import atomic_write_text

    atomic_write_text(out, csv_text)
    atomic_write_text(Path(args.markdown) if args.markdown else out.with_suffix(".md"), md)
    print(md, end="")
    return 0


def dump_plan(plan: Plan) -> str:
    return json.dumps({"representatives": plan.representatives, "evaluations": plan.evaluations,
                       "efficiency": plan.efficiency, "iterations": plan.iterations,
                       "jobs": [{k: str(v) for k, v in job.items()} for job in plan.jobs]}, indent=1) + "\n"


def load_plan(path: str | Path) -> Plan:
    return load_plan_text(Path(path).read_text())


def load_plan_text(text: str) -> Plan:
    d = json.loads(text)
    return Plan(representatives=d["representatives"], evaluations=[tuple(e) for e in d["evaluations"]],
                efficiency=list(d["efficiency"]), iterations={k: int(v) for k, v in d["iterations"].items()},
                jobs=list(d.get("jobs", [])))


if __name__ == "__main__":
    from fisa.utils.errors import run_cli

    run_cli(main)
