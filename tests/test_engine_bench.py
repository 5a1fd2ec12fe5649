"""The GPU check runs on CPU at a reduced size and says so."""
import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_gpu_check_on_cpu_is_reduced_and_prints_one_json():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    p = subprocess.run([sys.executable, "-m", "fisa.bench.gpu", "--images", "2", "--warmup", "1", "--train-iters", "2"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "REDUCED" in p.stderr
    rec = json.loads(p.stdout)
    assert rec["reduced"] is True and rec["device"].startswith("CPU")
    assert rec["paper_fisa"] == {"FPS": 2.63, "memory_GB": 10.2, "trainable_params_M": 26}
    for variant in ("fisa", "baseline"):
        assert rec[variant]["inference"]["FPS"] > 0 and rec[variant]["inference"]["memory_GB"] > 0
    assert rec["baseline"]["trainable_params"] == 0 < rec["fisa"]["trainable_params"]
    assert rec["fisa"]["training"]["iterations_per_s"] > 0 and rec["fisa"]["training"]["batch_per_gpu"] == 2
