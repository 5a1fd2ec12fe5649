import argparse, sys
from pathlib import Path
sys.path.insert(0, str(Path.cwd()))
import fake

ap = argparse.ArgumentParser()
ap.add_argument("--config", required=True)
ap.add_argument("--preset", required=True)
ap.add_argument("--mode", required=True)
ap.add_argument("--experiments", nargs="+", required=True)
ap.add_argument("--output", required=True)
args = ap.parse_args()
fake.log_call("rehearse", args)
fake.fail_if_asked("rehearse")
Path(args.output).parent.mkdir(parents=True, exist_ok=True)
Path(args.output).write_text("experiment,status\n" + "".join(f"{e},ok\n" for e in args.experiments))
