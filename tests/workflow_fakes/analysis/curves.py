import argparse, sys
from pathlib import Path
sys.path.insert(0, str(Path.cwd()))
import fake

ap = argparse.ArgumentParser()
for a in ("--target", "--preset", "--config", "--results-dir", "--out-pdf", "--out-png", "--runs-dir"):
    ap.add_argument(a, required=True)
args = ap.parse_args()
fake.log_call("curves", args)
for out in (args.out_pdf, args.out_png):
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_bytes(b"figure")
Path(args.runs_dir).mkdir(parents=True, exist_ok=True)
