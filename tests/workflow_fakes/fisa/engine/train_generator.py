import sys
from pathlib import Path
sys.path.insert(0, str(Path.cwd()))
import fake

ap = fake.engine_parser()
args = ap.parse_args()
fake.log_call("train_generator", args)
run = fake.run_config(args)
fake.write_json(Path(run["checkpoints"]["output_dir"]) / "done.json", {"generator": run["generator"]})
