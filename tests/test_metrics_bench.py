"""The metrics benchmark runs end to end (a smoke test on tiny sizes; no timing asserted)."""
from __future__ import annotations

import json

from fisa.bench.metrics import main


def test_benchmark_runs_and_agrees_with_references(tmp_path, capsys):
    assert main(["--images", "3", "--height", "32", "--width", "48", "--num-classes", "10",
                 "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "PQ  fisa (hotcoco)" in out and "mIoU reference (2 proc)" in out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["images"] == 3 and summary["pq_speedup"] > 0 and summary["miou_speedup"] > 0
    for line in out.splitlines():
        if "max |diff|" in line:
            assert float(line.rsplit("max |diff|", 1)[1]) <= 1e-9, line
