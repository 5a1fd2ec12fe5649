"""Time the planning of the paper matrix: `snakemake -n --profile slurm all_tables`.

Runs in a temporary copy of the workflow (nothing is written to results/) and prints
the wall time of each repetition and the number of planned jobs. Target: under 10 s.

    python workflow/scripts/bench_dryrun.py [--repeat 3] [--target all_tables]
"""
import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--target", default="all_tables")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp)
        for name in ("Snakefile", "config.yaml"):
            shutil.copy(REPO / name, copy / name)
        for name in ("workflow", "slurm", "envs"):
            shutil.copytree(REPO / name, copy / name)
        (copy / "analysis").mkdir()
        shutil.copy(REPO / "analysis/targets.yaml", copy / "analysis/targets.yaml")
        for i in range(args.repeat):
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--profile", "slurm", args.target],
                                 cwd=copy, capture_output=True, text=True)
            elapsed = time.perf_counter() - t0
            if res.returncode != 0:
                sys.exit(res.stdout[-3000:] + res.stderr[-3000:])
            total = re.search(r"^total\s+(\d+)", res.stdout, re.M)
            print(f"run {i + 1}: {elapsed:.2f} s, {total.group(1) if total else '?'} jobs planned")


if __name__ == "__main__":
    main()
