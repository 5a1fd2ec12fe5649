"""Stand-in training: a checkpoint first, done.json last; FAKE_FAIL=train dies in between."""
import os, sys
from pathlib import Path
sys.path.insert(0, str(Path.cwd()))
import fake

ap = fake.engine_parser()
ap.add_argument("--output-dir", required=True)
args = ap.parse_args()
fake.log_call("train", args)
out = Path(args.output_dir)
ckpt = out / "checkpoints" / "last.json"
resumed = ckpt.exists()
fake.write_json(ckpt, {"iteration": 1})
fake.fail_if_asked("train")
fake.write_json(out / "done.json", {"experiment": args.experiment, "seed": args.seed, "resumed": resumed,
                                    "slurm_job": os.environ.get("SLURM_JOB_ID")})
