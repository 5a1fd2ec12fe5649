import sys
from pathlib import Path
sys.path.insert(0, str(Path.cwd()))
import fake

ap = fake.engine_parser()
ap.add_argument("--dataset")
ap.add_argument("--output", required=True)
args = ap.parse_args()
fake.log_call("efficiency", args)
fake.write_json(args.output, {"experiment": fake.run_config(args)["experiment"], "metrics": {"FPS": 1.0}})
