import sys
from pathlib import Path
sys.path.insert(0, str(Path.cwd()))
import fake

ap = fake.engine_parser(experiment=False)
ap.add_argument("--backbone")
ap.add_argument("--generator")
args = ap.parse_args()
fake.log_call("fetch", args)
kind, name = ("backbone", args.backbone) if args.backbone else ("generator", args.generator)
import yaml
cache = yaml.safe_load(open(args.config))["presets"][args.preset]["cache_dir"]
fake.write_json(Path(cache) / ".done" / f"{kind}_{name}.json", {kind: name})
