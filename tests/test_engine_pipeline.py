"""The engine end to end on the small preset's synthetic data: generator training, FISA
training beats the frozen baseline on the ADE-150 stand-in (PQ and mIoU), exact resume of a
real FISA run, prediction files, the evaluation / efficiency records, referring and oracles."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from fisa.config import generator_run_config, load_config, resolve_experiment

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small-preset config pointing at fresh synthetic data and a fresh cache, with the
    swin_b generator trained (the "COCO pre-trained" generator of the small preset)."""
    from fisa.data.synthetic import generate
    from fisa.engine.train_generator import train_generator

    # both cores when the file runs alone; one per pytest-xdist worker (2 workers share 2 cores)
    torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
    root = tmp_path_factory.mktemp("small")
    data_root, cache = root / "datasets", root / "checkpoints"
    generate(str(data_root), seed=0)
    # a shorter generator schedule than the preset's: these tests need proposals, not good ones
    config = load_config(overrides={"presets": {"small": {
        "data_root": str(data_root), "cache_dir": str(cache),
        "generators": {"swin_b": {"train": {"iterations": 60}}}}}})
    done = train_generator(generator_run_config(config, "swin_b", "small"))
    assert done == cache / "generators" / "swin_b" / "done.json"
    # the small preset's "pre-trained" CLIP (the fetch rule's harness pre-training)
    from fisa.engine.pretrain_clip import pretrain_clip
    from fisa.models.clip_backbone import harness_clip_path

    pretrain_clip(config["presets"]["small"]["backbones"]["vit_l14_336"], harness_clip_path(cache, "vit_l14_336"))
    assert json.loads(done.read_text())["generator"] == "swin_b"
    assert (cache / "generators" / "swin_b" / "config.json").exists()
    return {"config": config, "root": root}


def _resolved(small, experiment, **train_overrides):
    r = resolve_experiment(small["config"], experiment, "small", seed=0)
    r["train"].update(train_overrides)
    return r


def _train(small, experiment, **train_overrides):
    from fisa.engine.train import train

    r = _resolved(small, experiment, **train_overrides)
    out = small["root"] / "runs" / experiment
    train(r, out, progress_bar=False)
    return r, out


def _evaluate(small, r, out, dataset):
    from fisa.engine.evaluate import evaluate

    path = small["root"] / "eval" / r["experiment"] / f"{dataset}.json"
    rec = evaluate(r, dataset, out, path)
    assert json.loads(path.read_text()) == json.loads(json.dumps(rec))
    return rec, path


@pytest.fixture(scope="module")
def baseline(small):
    r, out = _train(small, "baseline")
    return (r, out) + _evaluate(small, r, out, "ade150")


@pytest.fixture(scope="module")
def fisa(small):
    r, out = _train(small, "fisa")
    return (r, out) + _evaluate(small, r, out, "ade150")


def test_fisa_beats_frozen_baseline_on_ade150(baseline, fisa):
    """The issue's acceptance: the small schedule (presets.small: 100 iterations at lr 1e-2) lifts
    both metrics clearly, not by noise (measured: baseline PQ ~1 / mIoU ~1-5, FISA PQ 6-10 /
    mIoU 7-21 across lr and length choices; docs/engine.md)."""
    b, f = baseline[2]["metrics"], fisa[2]["metrics"]
    print(f"baseline PQ {b['PQ']:.2f} mIoU {b['mIoU']:.2f} | fisa PQ {f['PQ']:.2f} mIoU {f['mIoU']:.2f}")
    assert f["PQ"] > b["PQ"] + 2 and f["mIoU"] > b["mIoU"] + 2


def test_run_folder_contents(fisa, baseline):
    r, out = fisa[0], fisa[1]
    for name in ("run_config.yaml", "provenance.json", "losses.csv", "model_final.pt", "done.json"):
        assert (out / name).exists(), name
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["world_size"] == 1 and prov["iterations"] == r["train"]["iterations"] > 0
    assert prov["gpu_hours"] > 0 and prov["trainable_params"] > 0 and prov["commit"]
    assert prov["versions"]["torch"] == torch.__version__.split("+")[0]  # the wheel's local tag (+cpu) dropped
    rows = (out / "losses.csv").read_text().splitlines()
    assert len(rows) == 1 + r["train"]["iterations"]
    # trained state only: far smaller than the full model
    state = torch.load(out / "model_final.pt", weights_only=False)["model"]
    from fisa.engine.run_model import build_run_model

    full = build_run_model(r)
    assert sum(v.numel() for v in state.values()) < sum(p.numel() for p in full.parameters())
    # baseline: no training, same folder layout
    assert json.loads((baseline[1] / "done.json").read_text())["iterations"] == 0
    assert not (baseline[1] / "checkpoints").exists()


def test_prediction_files_and_record(fisa, small):
    r, _, rec, path = fisa
    pred = path.with_suffix("")
    from fisa.data.registry import get_meta

    meta = get_meta("ade150")
    sem = sorted((pred / "semantic").glob("*.png"))
    pan = json.loads((pred / "panoptic.json").read_text())
    assert len(sem) == rec["provenance"]["images"] == len(pan["annotations"]) > 0
    labels = np.array(Image.open(sem[0]))
    assert labels.dtype == np.uint8 and labels.max() < len(meta.classes)
    ids = {c["id"] for c in pan["categories"]}
    assert all(s["category_id"] in ids for a in pan["annotations"] for s in a["segments_info"])
    for k in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st", "mIoU", "fwIoU", "mACC", "pACC"):
        assert 0 <= rec["metrics"][k] <= 100, k
    assert set(rec["per_class"]) <= {c[0] for c in meta.classes} and rec["per_class"]
    p = rec["provenance"]
    assert p["config_hash"] and p["checkpoint"].endswith("model_final.pt") and len(p["checkpoint_sha256"]) == 64
    from fisa.engine.provenance import dataset_checksum

    assert p["dataset_split"] == "val" and p["dataset_checksum"] == dataset_checksum("ade150", "val", r["data_root"])
    assert p["timings"]["total_s"] > 0 and p["seed"] == 0
    # the whole stand-in split, checked against the size the synthetic generator declared
    assert rec["subset"] is False and rec["dataset_size"]["expected"] == rec["dataset_size"]["found"] == len(sem)
    assert "fisa.data.synthetic" in rec["dataset_size"]["expected_from"]


def test_evaluation_is_deterministic(fisa, small):
    r, out, rec, path = fisa
    again, _ = _evaluate(small, r, out, "ade150")
    assert again["metrics"] == rec["metrics"] and again["per_class"] == rec["per_class"]


def test_real_fisa_run_resumes_bit_identically(small):
    from fisa.engine.train import train

    r = _resolved(small, "fisa", iterations=6, checkpoint_every=3)
    a, b = small["root"] / "resume_a", small["root"] / "resume_b"
    train(r, a, progress_bar=False)
    shutil.copytree(a, b)
    # as if killed between the checkpoint of iteration 3 and the end
    for f in ("done.json", "model_final.pt", "checkpoints/ckpt_00000006.pt", "checkpoints/ckpt_00000006.json"):
        (b / f).unlink()
    # ... and SIGKILLed, so that its last heartbeat (iteration 3) is all it left of its attempt
    from fisa.engine import provenance
    from fisa.engine.distributed import DistContext
    from fisa.engine.train import AttemptLog

    killed = AttemptLog(b, provenance.collect("cpu"), DistContext())
    killed.begin()
    killed.heartbeat(3, checkpointed=True)
    train(r, b, progress_bar=False)
    sa = torch.load(a / "model_final.pt", weights_only=False)["model"]
    sb = torch.load(b / "model_final.pt", weights_only=False)["model"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    prov = json.loads((b / "provenance.json").read_text())
    attempts = prov["attempts"]
    assert [x["resumed_from"] for x in attempts] == [0, None, 3]
    assert [x["outcome"].split()[0] for x in attempts] == ["finished", "killed", "finished"]
    assert attempts[1]["iteration"] == 3 and prov["wall_seconds"] == pytest.approx(
        sum(x["wall_seconds"] for x in attempts), abs=0.01)
    assert not (b / AttemptLog.RUNNING).exists()


def test_changed_config_moves_the_old_run_aside_and_retrains(small):
    """Issue 16: a run folder of another model/train config is moved aside whole (nothing lost)
    and the run starts afresh; the same config again only rewrites done.json."""
    from fisa.engine.train import train

    r = _resolved(small, "fisa", iterations=2, checkpoint_every=1)
    out = small["root"] / "changed" / "seed0"
    train(r, out, progress_bar=False)
    old_model = (out / "model_final.pt").read_bytes()
    r2 = _resolved(small, "fisa", iterations=3, checkpoint_every=1, lr=0.5)
    train(r2, out, progress_bar=False)
    aside = [p for p in out.parent.iterdir() if p.name.startswith("seed0.replaced-")]
    assert len(aside) == 1
    assert (aside[0] / "model_final.pt").read_bytes() == old_model          # the old run, intact
    assert yaml.safe_load((aside[0] / "run_config.yaml").read_text())["train"]["lr"] == r["train"]["lr"]
    assert yaml.safe_load((out / "run_config.yaml").read_text())["train"]["lr"] == 0.5
    assert len((out / "losses.csv").read_text().splitlines()) == 1 + 3     # trained afresh: 3 iterations
    prov = json.loads((out / "provenance.json").read_text())
    assert [a["resumed_from"] for a in prov["attempts"]] == [0]
    # the same config: no training, no new attempt, nothing moved
    (out / "done.json").unlink()
    train(r2, out, progress_bar=False)
    assert json.loads((out / "done.json").read_text())["iterations"] == 3
    assert len(json.loads((out / "provenance.json").read_text())["attempts"]) == 1
    assert len([p for p in out.parent.iterdir() if p.name.startswith("seed0.replaced-")]) == 1


def test_failure_before_the_loop_is_recorded_as_failed(small, tmp_path):
    from fisa.engine.train import AttemptLog, train

    r = _resolved(small, "fisa", iterations=2)
    r["data_root"] = str(tmp_path / "no_datasets_here")
    out = tmp_path / "run"
    with pytest.raises(Exception, match="no_datasets_here"):
        train(r, out, progress_bar=False)
    attempts = json.loads((out / "provenance.json").read_text())["attempts"]
    assert [a["outcome"].split(":")[0] for a in attempts] == ["failed"]
    assert not (out / AttemptLog.RUNNING).exists() and not (out / "done.json").exists()


def test_referring_and_oracles(small, baseline):
    rec, _ = _evaluate(small, baseline[0], baseline[1], "refcoco")
    assert {"mIoU", "oIoU", "P@0.5", "P@0.9"} <= set(rec["metrics"])
    assert baseline[0]["eval"]["referring_size"] == 480 and rec["subset"] is False
    assert 0 <= rec["metrics"]["mIoU"] <= 100
    r, out = _train(small, "oracle_generator")
    oracle_g, path = _evaluate(small, r, out, "ade150")
    assert oracle_g["variant"] == "oracle_generator" and {"PQ", "mIoU"} <= set(oracle_g["metrics"])
    assert (path.with_suffix("") / "panoptic.json").exists()
    r, out = _train(small, "oracle_classifier")
    oracle_c, _ = _evaluate(small, r, out, "ade150")
    # ground-truth classes on the generator's masks: far above the (random-CLIP) baseline
    assert oracle_c["metrics"]["mIoU"] > baseline[2]["metrics"]["mIoU"] + 5
    assert oracle_c["metrics"]["PQ"] > baseline[2]["metrics"]["PQ"] + 5


def test_truncated_split_is_refused_unless_subsets_are_allowed(small, baseline, tmp_path):
    from fisa.data.registry import DatasetError
    from fisa.engine.evaluate import evaluate

    r, out = baseline[0], baseline[1]
    data = tmp_path / "datasets"
    shutil.copytree(r["data_root"], data)
    images = sorted((data / "pascal_ctx_d2" / "images" / "validation").glob("*.jpg"))
    images[0].unlink()
    next((data / "pascal_ctx_d2" / "annotations_ctx59" / "validation").glob(images[0].stem + ".*")).unlink()
    r = {**r, "data_root": str(data), "eval": {**r["eval"], "allow_subset": False}}
    n = len(images)
    # The tree no longer matches what its marker vouches for: refused in one line naming the count.
    from fisa.utils.markers import MarkerError, data_fingerprint

    with pytest.raises(MarkerError, match=rf"{n - 1} entries, .*recorded {n}"):
        evaluate(r, "pc59", out, tmp_path / "pc59.json")
    # A tree prepared that way (its marker vouches for the n - 1 images): the split-size check.
    marker = data / ".fisa" / "pc59.prepare.done"
    record = json.loads(marker.read_text())
    marker.write_text(json.dumps({**record, "fingerprint": data_fingerprint("pc59", str(data))}))
    with pytest.raises(DatasetError, match=rf"pc59 val: expected {n} images .*found {n - 1}"):
        evaluate(r, "pc59", out, tmp_path / "pc59.json")
    assert not (tmp_path / "pc59.json").exists()
    r["eval"]["allow_subset"] = True
    rec = evaluate(r, "pc59", out, tmp_path / "pc59.json")
    assert rec["subset"] is True and rec["metrics"]["mIoU"] >= 0
    assert {k: rec["dataset_size"][k] for k in ("expected", "found", "evaluated", "allow_subset")} == {
        "expected": n, "found": n - 1, "evaluated": n - 1, "allow_subset": True}


def test_efficiency_record(small, fisa):
    from fisa.engine.efficiency import efficiency

    r, out = fisa[0], fisa[1]
    path = small["root"] / "efficiency" / "fisa.json"
    rec = efficiency(r, out, path)
    m = rec["metrics"]
    assert m["FPS"] > 0 and m["memory_GB"] > 0 and m["trainable_params"] > 0
    assert m["iterations"] == r["train"]["iterations"] and m["gpu_hours"] > 0
    assert rec["provenance"]["device"].startswith("CPU") and "RSS" in rec["provenance"]["memory_measure"]
    assert json.loads(path.read_text())["metrics"]["FPS"] == m["FPS"]


def test_programs_run_from_the_run_config_alone(small, tmp_path):
    """The CLIs read only --run-config: training writes the run folder it names (with a copy of
    it), evaluation finds the model there; both records carry the run config's hash."""
    from fisa.config import config_hash, run_config, write_run_config
    from fisa.engine import evaluate, train

    run = run_config(small["config"], "baseline", "small", seed=0, run_dir=str(tmp_path / "runs" / "baseline"))
    run["eval"]["max_images"] = 2
    run["eval"]["precision"] = "bf16"  # autocast on CPU, stated in the record
    path = tmp_path / "run.yaml"
    write_run_config(path, run)
    train.main(["--run-config", str(path)])
    folder = Path(run["checkpoints"]["run_dir"])
    assert (folder / "done.json").exists() and (folder / "model_final.pt").exists()
    assert yaml.safe_load((folder / "run_config.yaml").read_text()) == yaml.safe_load(path.read_text())
    out = tmp_path / "eval" / "ade150.json"
    evaluate.main(["--run-config", str(path), "--dataset", "ade150", "--output", str(out)])
    rec = json.loads(out.read_text())
    assert rec["provenance"]["images"] == 2 and rec["provenance"]["config_hash"] == config_hash(run)
    assert rec["provenance"]["checkpoint"] == run["checkpoints"]["model_final"]
    assert rec["provenance"]["code_version"] == run["code_version"]
    assert rec["provenance"]["precision"] == "bf16"


def test_attribution_seve_and_the_adapter_each_contribute(small, baseline, fisa):
    """Which part learns (issue 17), on the small preset's data, seed 0 (the fixed seed set
    is {0}: each further seed costs four more runs), ADE-150 stand-in.

    SEVE: the `seve` experiment (SEVE + adapter trained, CLIP frozen, no SIMO) against the
    frozen `baseline`: asserted, it is large and stable. The adapter: `fisa` (2 adapter layers)
    against `adapter_0` (none): at toy scale its effect is inside the noise, so only its training
    is asserted (its zero-initialised last conv moved: the loss reaches it), not a gain.
    Measured (seed 0, the defaults of docs/choices.md), with the tiny CLIP pre-trained on 2 threads:
    baseline PQ 0.00 / mIoU 3.57, seve 4.85 / 18.42, adapter_0 13.07 / 16.64, fisa 9.67 / 20.82;
    on 1 thread (another pre-trained CLIP, float sums in another order): baseline 0.00 / 0.49,
    seve 4.78 / 15.16, adapter_0 11.89 / 18.60, fisa 11.36 / 17.87. SEVE lifts mIoU by ~15 points
    both times; the adapter's sign flips (+4.2 / -0.7 mIoU; PQ -3.4 / -0.5): at 12 evaluation
    images and one seed it is not measurable here (Tab. 3c's paper effect is +0.8 PQ)."""
    seve_r, seve_out = _train(small, "seve")
    seve = _evaluate(small, seve_r, seve_out, "ade150")[0]["metrics"]
    a0_r, a0_out = _train(small, "adapter_0")
    adapter_0 = _evaluate(small, a0_r, a0_out, "ade150")[0]["metrics"]
    b, f = baseline[2]["metrics"], fisa[2]["metrics"]
    print(f"baseline PQ {b['PQ']:.2f} mIoU {b['mIoU']:.2f} | seve PQ {seve['PQ']:.2f} mIoU {seve['mIoU']:.2f} | "
          f"adapter_0 PQ {adapter_0['PQ']:.2f} mIoU {adapter_0['mIoU']:.2f} | fisa PQ {f['PQ']:.2f} mIoU {f['mIoU']:.2f}")
    assert seve["mIoU"] > b["mIoU"] + 5 and seve["PQ"] > b["PQ"], "SEVE (+ adapter) did not lift the frozen baseline"
    state = torch.load(fisa[1] / "model_final.pt", map_location="cpu", weights_only=True)
    state = state.get("model", state)
    adapter = {k: v for k, v in state.items() if "distribution_adapter" in k}
    assert adapter, f"no Distribution Adapter weights in fisa's model_final.pt: {sorted(state)[:8]}"
    last_weight = max((k for k in adapter if k.endswith("weight")), key=lambda k: int(k.split(".")[-2]))
    assert adapter[last_weight].abs().sum() > 0, f"{last_weight} is still zero: the adapter did not train"
