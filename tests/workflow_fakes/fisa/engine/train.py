"""Stand-in training: a checkpoint first, done.json last; FAKE_FAIL=train dies in between.

FAKE_WAIT_SIGNAL=1 (and no checkpoint yet): wait for SLURM's SIGUSR1 warning, write the
checkpoint, exit 75 as the engine does when pre-empted; the next attempt resumes."""
import os, signal, sys, time
from pathlib import Path
sys.path.insert(0, str(Path.cwd()))
import fake

ap = fake.engine_parser()
args = ap.parse_args()
fake.log_call("train", args)
run = fake.run_config(args)
out = Path(run["checkpoints"]["run_dir"])
ckpt = out / "checkpoints" / "last.json"
resumed = ckpt.exists()
previous = fake.json.loads(ckpt.read_text()) if resumed else None
if os.environ.get("FAKE_WAIT_SIGNAL") and not resumed:
    got = []
    signal.signal(signal.SIGUSR1, lambda signum, frame: got.append(signum))
    t0 = time.time()
    while not got and time.time() - t0 < 400:
        time.sleep(0.5)
    time.sleep(2)                                   # writing a checkpoint takes a while
    fake.write_json(ckpt, {"iteration": 1, "signal": bool(got)})
    sys.exit(75)
fake.write_json(ckpt, {"iteration": 1})
fake.fail_if_asked("train")
fake.write_json(out / "done.json", {"experiment": run["experiment"], "seed": run["seed"], "resumed": resumed,
                                    "previous_checkpoint": previous, "slurm_job": os.environ.get("SLURM_JOB_ID")})
