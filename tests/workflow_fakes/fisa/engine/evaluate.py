import os, subprocess, sys
from pathlib import Path
sys.path.insert(0, str(Path.cwd()))
import fake

ap = fake.engine_parser()
ap.add_argument("--dataset", required=True)
ap.add_argument("--output", required=True)
args = ap.parse_args()
fake.log_call("evaluate", args)
run = fake.run_config(args)
fake.fail_if_asked("evaluate")
job = {}
if os.environ.get("SLURM_JOB_ID"):
    # What SLURM granted this job (the test checks the GPU request went through as GRES).
    job["scontrol"] = subprocess.run(["scontrol", "show", "job", os.environ["SLURM_JOB_ID"]],
                                     capture_output=True, text=True).stdout
fake.write_json(args.output, {"experiment": run["experiment"], "dataset": args.dataset, "seed": run["seed"],
                              "preset": run["preset"], "metrics": {"mIoU": 1.0}, "per_class": {},
                              "provenance": {}, "job": job})
