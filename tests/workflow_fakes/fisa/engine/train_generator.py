import sys
from pathlib import Path
sys.path.insert(0, str(Path.cwd()))
import fake

ap = fake.engine_parser(experiment=False)
ap.add_argument("--generator", required=True)
ap.add_argument("--output-dir", required=True)
args = ap.parse_args()
fake.log_call("train_generator", args)
fake.write_json(Path(args.output_dir) / "done.json", {"generator": args.generator})
