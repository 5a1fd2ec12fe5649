import argparse, sys
from pathlib import Path
sys.path.insert(0, str(Path.cwd()))
import fake

ap = argparse.ArgumentParser()
for a in ("--preset", "--config", "--metrics", "--out-csv"):
    ap.add_argument(a, required=True)
for a in ("--out-md", "--out-pdf", "--out-html"):
    ap.add_argument(a)
args = ap.parse_args()
fake.log_call("scorecard", args)
for out in (args.out_csv, args.out_md, args.out_pdf, args.out_html):
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text("table,row,column,paper,mean,std,n,ci_low,ci_high,verdict,basis\n")
