"""CLI: `python -m fisa.data.prepare --dataset NAME --root ROOT [--check-only] [--all-splits] [--allow-subset] [--workers N]`."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from fisa.utils.markers import marker_path

from . import PrepareError, prepare_dataset, PREPARERS


def main(argv: list[str] | None = None) -> int:
    """Prepare one dataset; exit 0 when its marker is written, 1 with a message otherwise."""
    p = argparse.ArgumentParser(prog="python -m fisa.data.prepare",
                                description="Convert a downloaded benchmark into the detectron2/FC-CLIP layout "
                                            "and mark it prepared (ROOT/.fisa/<name>.prepare.done).")
    p.add_argument("--dataset", required=True, choices=sorted(PREPARERS))
    p.add_argument("--root", default=os.environ.get("DETECTRON2_DATASETS", "datasets"), help="data root")
    p.add_argument("--check-only", action="store_true",
                   help="validate an existing prepared tree (e.g. prepared for FC-CLIP) and write the marker; "
                        "convert nothing")
    p.add_argument("--all-splits", action="store_true",
                   help="also the training splits of the evaluation-only datasets (the reference scripts write them; "
                        "the harness does not read them)")
    p.add_argument("--allow-subset", action="store_true",
                   help="accept splits smaller or larger than their expected size (the marker records the subset); "
                        "without it a mismatch is an error naming the expected and found counts")
    p.add_argument("--workers", type=int, default=None, help="processes (default: SLURM_CPUS_PER_TASK or all CPUs)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        record = prepare_dataset(args.dataset, args.root, check_only=args.check_only, workers=args.workers,
                                 all_splits=args.all_splits, allow_subset=args.allow_subset)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.dataset}: {record['mode']} {record['summary']} -> {marker_path(args.root, args.dataset)}")
    return 0


if __name__ == "__main__":
    from fisa.utils.errors import run_cli

    run_cli(main)  # one `error: <file>: <what> — <fix>` line for a user-fixable error
