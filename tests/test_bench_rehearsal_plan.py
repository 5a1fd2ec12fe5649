"""The real rehearsal's plan (one run per distinct model, each dataset once) and its report."""
from __future__ import annotations

import copy
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fisa.bench import rehearsal as R
from fisa.config import is_optional, load_config, resolve_experiment

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config():
    return load_config()


def in_scope(config, preset):
    return [n for n, e in config["experiments"].items() if not is_optional(e, preset)]


@pytest.mark.parametrize("preset", ["paper", "rehearsal"])
def test_every_distinct_model_runs_once_and_every_dataset_is_evaluated(config, preset):
    names = in_scope(config, preset)
    plan = R.rehearsal_plan(config, preset, names, ["fisa_main"])
    resolved = {n: resolve_experiment(config, n, preset) for n in names}
    key = {n: (r["variant"], r["model"]["backbone"], r["model"]["generator"]) for n, r in resolved.items()}
    # the representatives partition the experiments that train, one per distinct model
    members = [m for ms in plan.representatives.values() for m in ms]
    assert sorted(members) == sorted(n for n in names if not config["experiments"][n].get("weights_from"))
    assert sorted(key[r] for r in plan.representatives) == sorted(set(key.values()))
    for rep, ms in plan.representatives.items():
        assert {key[m] for m in ms} == {key[rep]}
        assert len(resolved[rep]["datasets"]) == max(len(resolved[m]["datasets"]) for m in ms)
    # each representative evaluated once (ADE-150 where it has it), every dataset of the matrix at least once
    evaluated = {}
    for exp, ds in plan.evaluations:
        assert exp in plan.representatives and ds in resolved[exp]["datasets"]
        evaluated.setdefault(exp, []).append(ds)
    assert set(evaluated) == set(plan.representatives)
    assert {ds for _, ds in plan.evaluations} == {ds for n in names for ds in resolved[n]["datasets"]}
    assert len(plan.evaluations) == len(set(plan.evaluations))
    assert plan.efficiency == ["fisa_main"]
    # the paper matrix: 13 distinct models of 28 experiments; FISA's 12 runs at the same shapes are one
    assert len(plan.representatives) == 13 and len(plan.evaluations) == 20
    assert set(plan.representatives["fisa_main"]) >= {"fisa", "adapter_0", "adapter_3", "iters_100", "data_1.0"}
    assert plan.iterations["fisa_main"] == resolved["fisa_main"]["train"]["iterations"]
    assert ("baseline", "refcoco") in plan.evaluations          # FISA's run with the most datasets lacks it
    assert ("fisa_main", "coco") in plan.evaluations            # a training representative before the baseline


def test_a_dataset_only_a_non_representative_lists_adds_that_run(config):
    cfg = copy.deepcopy(config)
    cfg["experiments"] = {n: cfg["experiments"][n] for n in ("fisa", "fisa_main")}
    plan = R.rehearsal_plan(cfg, "paper", ["fisa", "fisa_main"])
    assert list(plan.representatives) == ["fisa_main", "fisa"]   # fisa_main has 6 datasets, fisa 3
    assert ("fisa", "refcoco") in plan.evaluations and ("fisa", "refcocoplus") in plan.evaluations
    assert ("fisa_main", "ade150") in plan.evaluations and ("fisa", "ade150") not in plan.evaluations


BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def test_the_report_reads_each_jobs_benchmark_and_says_what_failed(tmp_path):
    plan = R.Plan(representatives={"fisa_main": ["fisa_main", "fisa"], "baseline": ["baseline"]},
                  evaluations=[("fisa_main", "ade150"), ("baseline", "refcoco")], efficiency=["fisa_main"],
                  iterations={"fisa_main": 2, "baseline": 0})

    def paths(rule, wc):  # the layout is the workflow's (its rules' patterns); this one is the test's
        name = "/".join(str(wc[k]) if k != "seed" else f"seed{wc[k]}" for k in ("experiment", "seed", "dataset")
                        if k in wc)
        return {"output": f"results/out/{rule}/{name}.json", "bench": f"results/benchmarks/{rule}/{name}.tsv",
                "log": f"results/logs/{rule}/{name}.log"}

    plan.jobs = R.planned_jobs(plan, seed_of=lambda e: 0, paths=paths)
    res = tmp_path / "results"
    (res / "out/train/fisa_main").mkdir(parents=True)
    (res / "out/train/fisa_main/seed0.json").write_text("{}")
    (res / "benchmarks/train/fisa_main").mkdir(parents=True)
    (res / "benchmarks/train/fisa_main/seed0.tsv").write_text(BENCH_HEADER +
                                                              "1575.2\t0:26:15\t12634.5\t0\t0\t0\t0\t0\t27.1\t428.4\n")
    (res / "logs/evaluate/fisa_main/seed0").mkdir(parents=True)
    (res / "logs/evaluate/fisa_main/seed0/ade150.log").write_text(
        "INFO loading\nTraceback (most recent call last):\n  ...\nRuntimeError: [enforce fail] out of memory\n")
    rows = R.report(R.load_plan_text(R.dump_plan(plan)), tmp_path)   # as the CLI reads it back
    by_job = {r["job"]: r for r in rows}
    assert [r["rule"] for r in rows] == ["train", "train", "evaluate", "evaluate", "efficiency"]
    t = by_job["fisa_main/seed0"]
    assert (t["status"], t["wall_s"], t["cpu_s"], t["max_rss_mb"]) == ("done", "1575", "428", "12634")
    assert "2 iterations" in t["note"] and "fisa_main, fisa" in t["note"]
    assert by_job["fisa_main/seed0/ade150"]["status"] == ("failed or running: RuntimeError: [enforce fail] "
                                                          "out of memory")
    assert by_job["baseline/seed0"]["status"] == "not run" and "cpu_s" not in by_job["baseline/seed0"]
    csv_text, md = R.render(rows, "rehearsal")
    parsed = list(csv.DictReader(csv_text.splitlines()))
    assert parsed[0]["max_rss_mb"] == "12634" and len(parsed) == 5
    assert md.startswith("Rehearsal of preset `rehearsal`: 1 of 5 planned jobs done; 428 CPU-s")
    assert "| train | fisa_main/seed0 | done | 1575 | 428 | 12634 |" in md


def test_the_report_without_a_plan_names_the_file_and_the_command(tmp_path):
    res = subprocess.run([sys.executable, "-m", "fisa.bench.rehearsal", "--preset", "rehearsal",
                          "--results", str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert res.returncode != 0
    assert f"{tmp_path}/rehearsal/plan.json: no rehearsal plan" in res.stderr
    assert "snakemake rehearsal_plan --config preset=rehearsal" in res.stderr


def test_the_rehearsal_target_plans_the_deduplicated_jobs_cold(config, tmp_path):
    """`snakemake -n rehearsal --config preset=rehearsal` plans the plan's runs, evaluations and
    efficiency (not all_tables' 38 + 61) and its jobs start cold (presets.rehearsal.warm_start)."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                          "-n", "rehearsal", "--config", "preset=rehearsal"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    counts = dict(ln.split()[:2] for ln in res.stdout.splitlines()
                  if len(ln.split()) == 2 and ln.split()[1].isdigit())
    plan = R.rehearsal_plan(config, "rehearsal", in_scope(config, "rehearsal"), ["fisa_main"])
    assert counts["train"] == str(len(plan.trainings)) == "13"
    assert counts["evaluate"] == str(len(plan.evaluations)) == "20"
    assert counts["efficiency"] == "1" and counts["rehearsal_report"] == "1"
    for exp, ds in plan.evaluations:
        assert f"results/rehearsal/eval/{exp}/seed0/{ds}.json" in res.stdout
    # the plan file the report reads names each job's output, log and benchmark as its rule does
    made = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                           "--cores", "1", "results/rehearsal/rehearsal/plan.json", "--config", "preset=rehearsal"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    jobs = R.load_plan(tmp_path / "results/rehearsal/rehearsal/plan.json").jobs
    assert len(jobs) == 13 + 20 + 1
    printed = {}   # output -> (log, benchmark) of each job the dry run printed
    for block in res.stdout.split("\nrule ")[1:]:
        fields = dict(ln.strip().split(": ", 1) for ln in block.splitlines()[1:] if ": " in ln)
        if "output" in fields:
            printed[fields["output"]] = (fields.get("log"), fields.get("benchmark"))
    for job in jobs:
        assert printed[job["output"]] == (job["log"], job["bench"]), job
    assert config["presets"]["rehearsal"]["warm_start"] is False
