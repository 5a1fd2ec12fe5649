"""Precision as configuration (fisa.engine.precision): honoured or refused, never silently fp32."""
import pytest
import torch

from fisa.engine.precision import PrecisionError, precision_context

CPU = torch.device("cpu")


def test_bf16_on_cpu_really_autocasts():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with precision_context("bf16", CPU, "train.precision"):
        assert (a @ b).dtype == torch.bfloat16
    with precision_context("fp32", CPU, "train.precision"):
        assert (a @ b).dtype == torch.float32


@pytest.mark.parametrize("precision, match", [("tf32", "efficiency.precision: tf32 is a CUDA"),
                                              ("fp16", "efficiency.precision: 'fp16' is not one of")])
def test_a_precision_the_device_cannot_run_fails_naming_the_key(precision, match):
    with pytest.raises(PrecisionError, match=match):
        precision_context(precision, CPU, "efficiency.precision")


def test_training_loop_refuses_before_training():
    """The loop checks the precision before anything runs (no silent fp32 fallback)."""
    from fisa.engine.loop import LoopConfig, train_loop
    from fisa.engine.distributed import DistContext

    cfg = LoopConfig(iterations=1, global_batch=1, micro_batch=1, precision="tf32")
    with pytest.raises(PrecisionError, match="train.precision"):
        train_loop(torch.nn.Linear(1, 1), None, None, None, None, cfg, "/nonexistent", DistContext())


def test_evaluation_refuses_before_loading_anything(tmp_path):
    """eval.precision is checked first: no model, dataset or record is touched."""
    from fisa.engine.evaluate import evaluate

    resolved = {"eval": {"precision": "tf32"}}
    with pytest.raises(PrecisionError, match="eval.precision: tf32 is a CUDA"):
        evaluate(resolved, "ade150", None, tmp_path / "ade150.json", device=CPU)
    assert not (tmp_path / "ade150.json").exists()


def test_every_preset_states_the_evaluation_precision():
    from fisa.config import load_config

    for name, preset in load_config()["presets"].items():
        assert preset["defaults"]["eval"]["precision"] in ("fp32", "tf32", "bf16"), name
