import argparse, sys
from pathlib import Path
sys.path.insert(0, str(Path.cwd()))
import fake

ap = argparse.ArgumentParser()
ap.add_argument("--root", required=True)
ap.add_argument("--seed", type=int, default=0)
args = ap.parse_args()
fake.log_call("synthetic", args)
for name in ["coco", "ade150", "ade847", "pc59", "pc459", "mapillary", "refcoco", "refcocoplus"]:
    fake.write_json(Path(args.root) / ".fisa" / f"{name}.prepare.done", {"dataset": name})
