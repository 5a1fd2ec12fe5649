"""Shared behaviour of the stand-in entry points (see README.md)."""
import argparse
import json
import os
import sys
import time
from pathlib import Path


def log_call(name, args):
    """Append {entry point, arguments, SLURM job} to calls.jsonl in the working directory."""
    record = {"entry": name, "args": vars(args), "slurm_job": os.environ.get("SLURM_JOB_ID"),
              "time": time.time()}
    with open("calls.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def write_json(path, payload):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def engine_parser(experiment=True):
    """--config/--preset (fetch: the whole config), else --run-config (train, evaluate, ...)."""
    ap = argparse.ArgumentParser()
    if experiment:
        ap.add_argument("--run-config", required=True)
    else:
        ap.add_argument("--config", required=True)
        ap.add_argument("--preset", required=True)
    return ap


def run_config(args):
    """The run config the workflow wrote (the real fisa.config wrote it)."""
    import yaml
    return yaml.safe_load(open(args.run_config))


def fail_if_asked(name):
    """Exit $FAKE_FAIL_CODE (default 1) when $FAKE_FAIL names this entry point (failure injection)."""
    if os.environ.get("FAKE_FAIL") == name:
        print(f"{name}: failing on purpose (FAKE_FAIL)", file=sys.stderr)
        sys.exit(int(os.environ.get("FAKE_FAIL_CODE", "1")))
