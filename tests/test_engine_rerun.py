"""Issue 16 item 1: a changed run config moves the old run folder aside (nothing lost) instead of
failing; deterministic errors exit 65/78 and the workflow does not retry them, while other
failures are retried."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fisa.config import load_config, run_config, write_run_config

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def config():
    return load_config()


def _fill(folder: Path, run: dict) -> None:
    """A run folder as training leaves it: its run config, checkpoints, final model."""
    (folder / "checkpoints").mkdir(parents=True)
    write_run_config(folder / "run_config.yaml", run)
    (folder / "checkpoints" / "ckpt_00000002.pt").write_bytes(b"old checkpoint")
    (folder / "model_final.pt").write_bytes(b"old model")


def test_same_config_is_kept_changed_config_is_moved_aside(config, tmp_path):
    from fisa.engine.train import set_aside_if_changed

    run = run_config(config, "fisa", "small")
    out = tmp_path / "runs" / "fisa" / "seed0"
    assert set_aside_if_changed(out, run) is None                    # nothing there yet
    _fill(out, run)
    same = json.loads(json.dumps(run))
    same["eval"]["max_images"] = 3                                   # not a model/train change
    same["data_root"] = "/elsewhere"                                 # nor is a path
    assert set_aside_if_changed(out, same) is None
    assert (out / "model_final.pt").read_bytes() == b"old model"     # a resume keeps everything

    changed = json.loads(json.dumps(run))
    changed["train"]["lr"] = run["train"]["lr"] / 10
    aside = set_aside_if_changed(out, changed)
    assert aside is not None and aside.parent == out.parent and aside.name.startswith("seed0.replaced-")
    assert not out.exists()
    assert (aside / "model_final.pt").read_bytes() == b"old model"
    assert (aside / "checkpoints" / "ckpt_00000002.pt").read_bytes() == b"old checkpoint"
    assert yaml.safe_load((aside / "run_config.yaml").read_text())["train"]["lr"] == run["train"]["lr"]
    # a second change in the same second gets its own folder
    _fill(out, run)
    again = set_aside_if_changed(out, changed)
    assert again != aside and again.exists() and aside.exists()


def test_folder_of_unknown_config_is_moved_aside(config, tmp_path):
    from fisa.engine.train import set_aside_if_changed

    out = tmp_path / "seed0"
    (out / "checkpoints").mkdir(parents=True)                         # checkpoints, no run config
    aside = set_aside_if_changed(out, run_config(config, "fisa", "small"))
    assert aside is not None and (aside / "checkpoints").is_dir()


@pytest.mark.parametrize("module", ["fisa.engine.train", "fisa.engine.evaluate"])
def test_bad_run_config_exits_78_naming_the_file(config, tmp_path, module):
    bad = tmp_path / "run.yaml"
    write_run_config(bad, run_config(config, "fisa", "small"))
    text = bad.read_text()
    assert "  lr: 0.01\n" in text
    bad.write_text(text.replace("  lr: 0.01\n", "  lr: 1e-3\n"))         # YAML reads a string
    args = [sys.executable, "-m", module, "--run-config", str(bad)]
    if module.endswith("evaluate"):
        args += ["--dataset", "ade150", "--output", str(tmp_path / "x.json")]
    res = subprocess.run(args, capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 78, res.stderr[-2000:]
    assert f"error: {bad}: invalid run config" in res.stderr
    assert "write 1.0e-3" in res.stderr                               # the YAML hint


def test_missing_data_exits_65(config, tmp_path):
    from fisa.engine.cli import EXIT_DATA_ERROR, run_main

    def body():
        raise FileNotFoundError(f"{tmp_path}/datasets/ade150: missing")

    with pytest.raises(SystemExit) as e:
        run_main(body)
    assert e.value.code == EXIT_DATA_ERROR == 65

    def transient():
        raise RuntimeError("CUDA error: an illegal memory access")   # retried: not turned into 65/78

    with pytest.raises(RuntimeError):
        run_main(transient)


@pytest.mark.slow   # three Snakemake runs of stand-ins (~1 min on 2 idle cores)
def test_workflow_does_not_retry_deterministic_errors(tmp_path):
    """Through Snakemake (stand-in entry points): exit 1 (transient) is tried 3 times with
    --retries 2; exit 65 runs once and its retries fail at once, naming the reason."""
    from test_workflow import snakemake, workflow_copy

    target = "results/small/runs/baseline/seed0/done.json"
    copy = workflow_copy(tmp_path, fakes=True)
    log = copy / "results/small/logs/train/baseline/seed0.log"
    marker = log.parent / (log.name + ".no-retry")
    tried = 0
    for code, tries in (("1", 3), ("65", 1)):
        res = snakemake(copy, "--cores", "1", "--retries", "2", target, "--config", "preset=small",
                        env={"FAKE_FAIL": "train", "FAKE_FAIL_CODE": code})
        assert res.returncode != 0
        calls = [json.loads(line) for line in (copy / "calls.jsonl").read_text().splitlines()]
        assert sum(c["entry"] == "train" for c in calls) - tried == tries, res.stdout[-3000:]
        tried += tries
        assert marker.exists() == (code == "65")
    assert marker.read_text().strip() == "65"
    assert "not retried: the previous attempt failed with a deterministic error (exit 65)" in res.stdout
