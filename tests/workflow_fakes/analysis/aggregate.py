import argparse, json, sys
from pathlib import Path
sys.path.insert(0, str(Path.cwd()))
import fake

ap = argparse.ArgumentParser()
ap.add_argument("--preset", required=True)
ap.add_argument("--eval-jsons", nargs="*", default=[])
ap.add_argument("--efficiency-jsons", nargs="*", default=[])
ap.add_argument("--metrics-out", required=True)
ap.add_argument("--per-class-out", required=True)
args = ap.parse_args()
fake.log_call("aggregate", args)
rows = ["experiment,dataset,seed,metric,value"]
for f in args.eval_jsons:
    r = json.load(open(f))
    rows += [f"{r['experiment']},{r['dataset']},{r['seed']},{k},{v}" for k, v in r["metrics"].items()]
for out, text in ((args.metrics_out, "\n".join(rows) + "\n"), (args.per_class_out, "experiment\n")):
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
