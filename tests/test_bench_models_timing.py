"""fisa.bench.models' timing: interleaved pairs, both clocks, the ratio with its spread (no speed assertion)."""
from fisa.bench.models import ratio_spread, time_side_by_side


def test_ratio_spread_quartiles_and_range():
    s = ratio_spread([1.0, 1.2, 1.1, 2.0, 0.9])
    assert (s["median"], s["min"], s["max"], s["n"]) == (1.1, 0.9, 2.0, 5)
    assert (s["q1"], s["q3"]) == (1.0, 1.2)
    assert ratio_spread([1.3]) == {"median": 1.3, "q1": 1.3, "q3": 1.3, "min": 1.3, "max": 1.3, "n": 1}


def test_time_side_by_side_pairs_both_models_on_both_clocks():
    args = {"clip": "fisa-tiny-vit-l", "image_size": 32, "masks": 4, "classes": 5, "device": "cpu",
            "threads": 1, "warmup": 0, "repeats": 3}
    import torch

    threads = torch.get_num_threads()
    out = time_side_by_side(args)
    assert torch.get_num_threads() == threads  # the test session keeps its own setting
    assert out["clock"] == "cpu"
    for clock in ("cpu", "wall"):
        assert out["paired_ratio"][clock]["n"] == 3 and out["paired_ratio"][clock]["median"] > 0
    for v in ("baseline", "fisa"):
        assert out[v]["median_cpu_s"] > 0 and out[v]["median_wall_s"] >= out[v]["min_wall_s"] > 0
