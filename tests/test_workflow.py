"""The Snakemake workflow: planning (dry-runs of the real Snakefile), config validation,
target scoping, rerun triggers, resources, failure semantics, README/CI consistency.

Every Snakemake call runs in a temporary copy of the workflow (nothing is written to the
repository's results/). Jobs that really execute use the stand-ins of
tests/workflow_fakes (they shadow the installed entry points in the copy)."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import yaml

from fisa.config import load_config, resources_for

REPO = Path(__file__).resolve().parent.parent
FAKES = REPO / "tests" / "workflow_fakes"


def workflow_copy(dest: Path, fakes: bool = False) -> Path:
    """Copy what the workflow reads (Snakefile, workflow/, config, profile, envs, targets) to `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, dest / name)
    for name in ("workflow", "slurm", "envs", "profiles"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    if not fakes:
        # The real programs run from the copy's folder, whose `fisa`/`analysis` come first on
        # sys.path: copy the whole packages (a partial folder would shadow the installed one).
        for name in ("fisa", "analysis"):
            shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        return dest
    (dest / "analysis").mkdir(exist_ok=True)
    for name in ("targets.yaml", "layouts.yaml", "paper_numbers.csv"):  # what each target's rule reads
        shutil.copy(REPO / "analysis" / name, dest / "analysis" / name)
    # Class lists and prompt templates are inputs of training and evaluation (inputs.smk).
    shutil.copytree(REPO / "fisa/data/classes", dest / "fisa/data/classes", ignore=shutil.ignore_patterns("*.py", "__pycache__", "sources"))
    (dest / "fisa/models").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "fisa/models/prompt_templates.json", dest / "fisa/models/prompt_templates.json")
    if fakes:
        shutil.copytree(FAKES, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        # The real modules the Snakefile imports (config, the data registry, the marker paths),
        # under the stand-in package.
        for name in ("__init__.py", "config.py", "models/variants.yaml", "data/registry.py", "utils/__init__.py",
                     "utils/markers.py", "utils/errors.py", "utils/io.py", "engine/warm.py",  # + the jobs' launcher
                     "bench/rehearsal.py"):  # the rehearsal's plan (workflow/rules/rehearsal.smk)
            (dest / "fisa" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / "fisa" / name, dest / "fisa" / name)
    return dest


def snakemake(cwd: Path, *args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run snakemake (this interpreter's) in `cwd`; stdout and stderr together in .stdout."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    full_env.pop("DETECTRON2_DATASETS", None)
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=full_env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)


def job_counts(output: str) -> dict:
    """The 'Job stats' table of a snakemake run/dry-run -> {rule: count}."""
    block = output.split("Job stats:", 1)[1]
    counts = {}
    for line in block.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def planned_outputs(output: str, rule: str) -> list[str]:
    """Outputs of every planned job of `rule` in a dry-run printout."""
    found = []
    # a job of a group (`group:`) is printed indented under its "Group job" line
    for block in re.split(r"\n(?=\s*(?:\[|rule |localrule ))", output):
        if re.match(rf"(local)?rule {re.escape(rule)}:", block.strip()):
            m = re.search(r"^\s+output: (.+)$", block, re.M)
            if m:
                found += [s.strip() for s in m.group(1).split(",")]
    return found


def trained(output: str) -> set[str]:
    return {re.search(r"runs/([^/]+)/seed", o).group(1) for o in planned_outputs(output, "train")}


@pytest.fixture(scope="module")
def config():
    return load_config(REPO / "config.yaml")


@pytest.fixture(scope="module")
def paper_plan(tmp_path_factory):
    """Dry-run of the cluster command, from a copy whose ./slurm is the project's profile."""
    copy = workflow_copy(tmp_path_factory.mktemp("paper"))
    t0 = time.perf_counter()
    res = snakemake(copy, "-n", "--profile", "slurm", "all_tables")
    elapsed = time.perf_counter() - t0
    print(f"paper dry-run of all_tables with --profile slurm: {elapsed:.1f} s")
    assert res.returncode == 0, res.stdout[-3000:]
    return copy, res.stdout


def test_paper_dry_run_plans_the_whole_matrix(paper_plan, config):
    copy, out = paper_plan
    counts = job_counts(out)
    non_optional = [e for e, spec in config["experiments"].items() if not spec.get("optional")]
    seeds = config["seeds"]
    assert counts["train"] == len(non_optional) * len(seeds)
    assert counts["evaluate"] == sum(len(config["experiments"][e]["datasets"]) for e in non_optional) * len(seeds)
    assert counts["efficiency"] == 1                 # Table 2 is the only efficiency target
    # one wildcard rule per data stage, one job per dataset of the registry
    datasets = ("coco", "ade150", "ade847", "pc59", "pc459", "mapillary", "refcoco", "refcocoplus")
    assert counts["download"] == counts["prepare"] == len(datasets)
    for ds in datasets:
        assert f"datasets/.fisa/{ds}.download.done" in out and f"datasets/.fisa/{ds}.prepare.done" in out
    tables = [t for t, spec in yaml.safe_load((REPO / "analysis/targets.yaml").read_text()).items()
              if t.startswith("table") and "paper" in spec.get("presets", ["paper"])]  # presets: in all_tables there
    for t in tables:
        assert counts[t] == 1 and counts[f"aggregate_{t}"] == 1
    assert "fisa_retrained_generator" not in trained(out)   # optional: only when asked
    assert not (copy / "results").exists(), "a dry-run must not write results/"


def test_paper_training_asks_gpus_one_task_each_and_preemption(paper_plan, config):
    _, out = paper_plan
    res = resources_for(config, "train", "paper")
    block = next(b for b in re.split(r"\n(?=\[)", out) if "rule train:" in b and "runs/fisa_main/" in b)
    resources = dict(kv.split("=", 1) for kv in re.search(r"resources: (.+)", block).group(1).split(", "))
    assert int(resources["gpu"]) == res["gpus"] == 4
    assert int(resources["tasks"]) == res["gpus"] and resources["tasks_per_gpu"] == "1"
    assert resources["mpi"] == "srun"
    assert int(resources["cpus_per_task"]) == res["cpus"] // res["gpus"]
    assert int(resources["mem_mb"]) == res["mem_mb"] and int(resources["runtime"]) == res["runtime"]
    assert "--signal=USR1@300" in resources["slurm_extra"]
    assert "gres" not in resources["slurm_extra"]           # the plugin refuses GRES there
    assert "srun --ntasks=4" in block                          # one task per GPU
    ev = next(b for b in re.split(r"\n(?=\[)", out) if "rule evaluate:" in b)
    ev_res = re.search(r"resources: (.+)", ev).group(1)
    assert "gpu=1" in ev_res and "mpi=" not in ev_res


def test_profile_is_found_from_the_root_as_slurm():
    profile = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["slurm-requeue"] is True and profile["retries"] >= 1


def test_one_target_runs_only_what_it_needs(tmp_path):
    copy = workflow_copy(tmp_path)
    res = snakemake(copy, "-n", "--cores", "2", "fig3_per_class_gains", "--config", "preset=small")
    assert res.returncode == 0, res.stdout[-3000:]
    assert trained(res.stdout) == {"baseline", "seve"}
    assert {Path(p).name for p in planned_outputs(res.stdout, "evaluate")} == {"ade150.json"}
    counts = job_counts(res.stdout)
    assert "aggregate" not in counts and "table1_main" not in counts
    assert counts["synthetic_data"] == 1 and not any(r.startswith("download_") for r in counts)


def test_optional_experiment_only_when_asked(tmp_path):
    copy = workflow_copy(tmp_path)
    res = snakemake(copy, "-n", "--cores", "2", "fig2b_frozen_generator", "--config", "preset=small")
    assert res.returncode == 0, res.stdout[-3000:]
    assert trained(res.stdout) == {"fisa"}
    res = snakemake(copy, "-n", "--cores", "2", "fig2b_frozen_generator",
                    "--config", "preset=small", "with_optional=true")
    assert res.returncode == 0, res.stdout[-3000:]
    assert trained(res.stdout) == {"fisa", "fisa_retrained_generator"}
    assert any("generators/swin_b_retrained/done.json" in o for o in planned_outputs(res.stdout, "train_generator"))


@pytest.mark.parametrize("edit, expected", [
    (("lora_rank: 64}", "lora_rnak: 64}"), r"experiments\.lora_r64\.model: .*'lora_rnak' was unexpected"),
    (("seeds: [0]", "seeds: [zero]"), r"seeds\.0: 'zero' is not of type 'integer'"),
    (("schedules: {main: 60, ablation: 25}", "schedules: {main: 60, ablation: forty}"),
     r"presets\.small\.schedules\.ablation: 'forty' is not of type 'integer'"),
])
def test_config_errors_name_the_key_before_any_job(tmp_path, edit, expected):
    copy = workflow_copy(tmp_path)
    cfg = copy / "config.yaml"
    assert edit[0] in cfg.read_text()
    cfg.write_text(cfg.read_text().replace(edit[0], edit[1], 1))
    res = snakemake(copy, "-n", "--cores", "1", "table3b_lora", "--config", "preset=small")
    assert res.returncode != 0
    assert re.search(expected, res.stdout), res.stdout[-2000:]
    assert "Job stats" not in res.stdout


def test_unknown_experiment_in_targets_is_named(tmp_path):
    copy = workflow_copy(tmp_path)
    t = copy / "analysis" / "targets.yaml"
    t.write_text(t.read_text().replace("experiments: [baseline, seve]", "experiments: [baseline, sevee]", 1))
    res = snakemake(copy, "-n", "--cores", "1", "fig3_per_class_gains", "--config", "preset=small")
    assert res.returncode != 0
    assert "fig3_per_class_gains.experiments: experiment 'sevee' is not defined" in res.stdout


def test_failed_job_leaves_nothing_complete_and_rerun_resumes(tmp_path):
    copy = workflow_copy(tmp_path, fakes=True)
    target = "results/small/runs/adapter_1/seed0/done.json"
    res = snakemake(copy, "--cores", "1", target, "--config", "preset=small", env={"FAKE_FAIL": "train"})
    assert res.returncode != 0
    run = copy / "results/small/runs/adapter_1/seed0"
    assert not (run / "done.json").exists()
    assert (run / "checkpoints/last.json").exists()       # the checkpoint survives the failure
    assert "results/small/logs/train/adapter_1/seed0.log" in res.stdout   # the log is named
    res = snakemake(copy, "--cores", "1", target, "--config", "preset=small")
    assert res.returncode == 0, res.stdout[-3000:]
    assert json.loads((run / "done.json").read_text())["resumed"] is True
    bench = (copy / "results/small/benchmarks/train/adapter_1/seed0.tsv").read_text().splitlines()
    assert bench[0].split("\t")[:2] == ["s", "h:m:s"] and len(bench) == 2   # one timed job
    # The engine got the run config Snakemake resolved (with the --config override).
    calls = [json.loads(line) for line in (copy / "calls.jsonl").read_text().splitlines()]
    train = [c for c in calls if c["entry"] == "train"][-1]
    assert train["args"]["run_config"] == "results/small/configs/runs/adapter_1/seed0.yaml"
    run = yaml.safe_load((copy / train["args"]["run_config"]).read_text())
    assert run["preset"] == "small" and run["experiment"] == "adapter_1" and run["model"]["adapter_layers"] == 1
    assert run["checkpoints"]["run_dir"] == "results/small/runs/adapter_1/seed0"
    res = snakemake(copy, "-n", "--cores", "1", target, "--config", "preset=small")
    assert "Nothing to be done" in res.stdout


def test_changing_one_experiment_reruns_only_it(tmp_path):
    copy = workflow_copy(tmp_path, fakes=True)
    res = snakemake(copy, "--cores", "2", "table3c_adapter_layers", "--config", "preset=small")
    assert res.returncode == 0, res.stdout[-3000:]
    # adapter_0/1/3 + fisa with its 3 seeds (the small preset's seed spread): 6 metric rows
    assert (copy / "results/small/tables/table3c_adapter_layers.tex").read_text() == "table3c_adapter_layers: 6 rows\n"
    cfg = copy / "config.yaml"
    old = "adapter_1: {variant: fisa, model: {adapter_layers: 1}"
    assert old in cfg.read_text()
    cfg.write_text(cfg.read_text().replace(old, old.replace("adapter_layers: 1", "adapter_layers: 5")))
    res = snakemake(copy, "-n", "--cores", "2", "table3c_adapter_layers", "--config", "preset=small")
    assert res.returncode == 0, res.stdout[-3000:]
    assert trained(res.stdout) == {"adapter_1"}
    # its run config is rewritten (and the whole config, which only fetch and figures read, as
    # an `ancient` input: rewriting it reruns nothing by itself)
    assert job_counts(res.stdout) == {"run_config": 1, "effective_config": 1, "train": 1, "evaluate": 1,
                                      "aggregate_table3c_adapter_layers": 1, "table3c_adapter_layers": 1,
                                      "total": 6}
    assert planned_outputs(res.stdout, "run_config") == ["results/small/configs/runs/adapter_1/seed0.yaml"]
    # A change of where data live: the cache moved (files and times kept) and the config pointed
    # at it. Known limitation of the run-config design: the run configs hold the paths, so they
    # are rewritten and their jobs are planned again (a finished training of the same
    # model/train config returns at once, docs/workflow.md); the data and the checkpoints are
    # not re-made.
    cfg.write_text(cfg.read_text().replace("adapter_layers: 5", "adapter_layers: 1"))
    old_cache = "cache_dir: resources/small/checkpoints\n"
    assert old_cache in cfg.read_text()
    (copy / "resources/small/checkpoints").rename(copy / "resources/small/moved_checkpoints")
    cfg.write_text(cfg.read_text().replace(old_cache, "cache_dir: resources/small/moved_checkpoints\n", 1))
    res = snakemake(copy, "-n", "--cores", "2", "--rerun-triggers=params", "table3c_adapter_layers",
                    "--config", "preset=small")
    assert res.returncode == 0, res.stdout[-3000:]
    moved = job_counts(res.stdout)
    assert moved["run_config"] >= 1 and not {"synthetic_data", "fetch_checkpoint"} & set(moved), moved


def _readme_block(section: str) -> str:
    text = (REPO / "README.md").read_text()
    body = text.split(f"## {section}", 1)[1]
    return re.search(r"```bash\n(.+?)\n```", body, re.S).group(1).strip()


def test_ci_runs_exactly_the_readme_test_command():
    readme = _readme_block("Tests")
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd ", "export CI=true"))]
    assert ci == [readme]


def test_readme_quick_start_targets_exist(tmp_path):
    cmd = _readme_block("Quick start")
    assert "--config preset=small" in cmd
    sm = cmd.split("snakemake", 1)[1].split()
    # --config takes every following word: the targets must come before it.
    assert sm.index("--config") == len(sm) - 2
    targets = [w for w in sm if not w.startswith("-") and "=" not in w and not w.isdigit()]
    assert targets == ["all_tables", "all_figures"]


def test_fisa_validate_config_uses_the_workflow_schema(config):
    from fisa.config import ConfigError, validate_config
    import copy as _copy
    bad = _copy.deepcopy(config)
    bad["presets"]["paper"]["resources"]["trian"] = {"gpus": 4}
    with pytest.raises(ConfigError, match=r"presets\.paper\.resources: 'trian' is not one of"):
        validate_config(bad)
    bad = _copy.deepcopy(config)
    bad["experiments"]["fisa"]["datasets"] = ["ade151"]
    with pytest.raises(ConfigError, match=r"experiments\.fisa\.datasets\.0: 'ade151' is not one of"):
        validate_config(bad)
    bad = _copy.deepcopy(config)
    bad["presets"]["small"]["data_source"] = "scraped"
    with pytest.raises(ConfigError, match=r"presets\.small\.data_source: 'scraped' is not one of"):
        validate_config(bad)


@pytest.mark.parametrize("env,outcome", [({}, "fail"), ({"FISA_ALLOW_NO_SLURM": "1"}, "skip"),
                                         ({"FISA_ALLOW_NO_SLURM": "1", "CI": "true"}, "fail")])
def test_slurm_tests_are_skipped_only_when_explicitly_allowed_and_never_in_ci(monkeypatch, env, outcome):
    from test_workflow_slurm import _skip_loudly

    for k in ("CI", "FISA_ALLOW_NO_SLURM"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    got = None
    with warnings.catch_warnings(record=True):
        try:
            _skip_loudly("no root here")
        except pytest.fail.Exception as e:  # caught here: a wrong skip must fail this test, not skip it
            got = ("fail", str(e))
        except pytest.skip.Exception as e:
            got = ("skip", str(e))
    assert got is not None and got[0] == outcome, got
    assert "no root here" in got[1] and "FISA_ALLOW_NO_SLURM=1" in got[1]
