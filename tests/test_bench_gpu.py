"""`python -m fisa.bench.gpu`'s logic without a GPU: what it compares with Table 2, what it
prints, and that it refuses (rather than silently changes) what the machine cannot run."""
import pytest
import torch

from fisa.bench import gpu
from fisa.engine.precision import PrecisionError


def _record(reduced: bool) -> dict:
    return {"device": "NVIDIA A100-SXM4-80GB" if not reduced else "CPU (x86_64)", "reduced": reduced,
            "fisa": {"trainable_params": 26_321_225,
                     "inference": {"FPS": 5.26, "memory_GB": 5.1, "precision": "bf16"},
                     "training": {"iterations_per_s": 1.5, "memory_GB": 30.0, "batch_per_gpu": 2, "crop": 1024,
                                  "precision": "bf16"}}}


def test_comparison_is_measured_over_the_papers_table2():
    rows = {r["measure"]: r for r in gpu.compare_with_table2(_record(reduced=False))}
    assert rows["FPS"]["paper"] == 2.63 and rows["FPS"]["ratio"] == pytest.approx(2.0)
    assert rows["memory_GB"]["paper"] == 10.2 and rows["memory_GB"]["ratio"] == pytest.approx(0.5)
    assert rows["trainable_params_M"]["ratio"] == pytest.approx(26.321225 / 26)
    assert rows["FPS"]["precision"] == "bf16" and rows["trainable_params_M"]["precision"] is None
    text = gpu.format_comparison(_record(reduced=False))
    assert "| FPS | 5.26 | 2.63 | 2.00 | bf16 |" in text and "| memory_GB | 5.1 | 10.2 | 0.50 | bf16 |" in text
    assert "on NVIDIA A100-SXM4-80GB" in text and "1.5 it/s, 30 GB peak, batch 2 at 1024 px, bf16" in text


def test_reduced_run_compares_nothing():
    rows = gpu.compare_with_table2(_record(reduced=True))
    assert [r["ratio"] for r in rows] == [None, None, None]
    assert all("not comparable" in r["note"] for r in rows)
    text = gpu.format_comparison(_record(reduced=True))
    assert "REDUCED: not comparable" in text and "| FPS | 5.26 | 2.63 | - | bf16 |" in text


def test_require_gpu_without_cuda_fails_naming_the_flag(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(gpu.NoGPUError, match="--require-gpu: torch sees no CUDA device"):
        gpu.check(["--require-gpu"])


def test_a_precision_the_cpu_cannot_run_is_refused_not_replaced():
    model = gpu.build("fisa", reduced=True, device=torch.device("cpu"))
    with pytest.raises(PrecisionError, match="--precision: tf32 is a CUDA"):
        gpu.bench_inference(model, torch.device("cpu"), True, images=1, warmup=0, precision="tf32")


def test_reduced_cpu_run_states_its_precision_and_prints_the_comparison(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rec = gpu.check(["--images", "1", "--warmup", "0", "--train-iters", "1", "--precision", "bf16",
                    "--train-precision", "bf16"])
    assert rec["reduced"] is True
    assert rec["fisa"]["inference"]["precision"] == "bf16" == rec["fisa"]["training"]["precision"]
    assert rec["baseline"]["inference"]["precision"] == "bf16"
    err = capsys.readouterr().err
    assert "REDUCED" in err and "FISA vs the paper's Table 2" in err
    assert [r["measure"] for r in rec["table2"]] == ["FPS", "memory_GB", "trainable_params_M"]
