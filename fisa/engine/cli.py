"""The programs' command-line protocol: logging, the `--run-config FILE` argument, and the exit
codes the workflow reads (65/78: deterministic, not retried). Imports no torch, so a program's
argument errors come back without the heavy imports."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable

from fisa.config import ConfigError

log = logging.getLogger("fisa.engine")

# Exit codes (sysexits.h). 75 (EX_TEMPFAIL, fisa.engine.loop.PREEMPTED_EXIT_CODE): pre-empted,
# checkpointed, resume by rerunning. 65 (EX_DATAERR) / 78 (EX_CONFIG): a deterministic error
# (bad input, bad config) that a retry cannot fix; the workflow does not retry them
# (workflow/rules/common.smk, `guarded`).
EXIT_DATA_ERROR = 65
EXIT_CONFIG_ERROR = 78


def setup_logging(rank: int = 0) -> None:
    """Plain log lines with a timestamp (readable in SLURM logs); other ranks only warn."""
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)


def add_run_config_arg(ap: argparse.ArgumentParser) -> None:
    """--run-config FILE: the one input of every program (written by the workflow's `run_config` rule)."""
    ap.add_argument("--run-config", required=True, metavar="FILE",
                    help="the resolved run config (results/<P>/configs/runs/<E>/seed<S>.yaml; "
                         "python -m fisa.config writes one by hand)")


def deterministic_error_code(error: BaseException) -> int | None:
    """EXIT_CONFIG_ERROR / EXIT_DATA_ERROR for errors a retry cannot fix, else None (retry)."""
    from fisa.utils.errors import describe

    if isinstance(error, ConfigError):
        return EXIT_CONFIG_ERROR
    # fisa.data's DatasetError is a ValueError; a missing input is a FileNotFoundError; a
    # project error or a corrupt file (torch/safetensors/PIL/JSON/pickle) is what `describe`
    # turns into one line (fisa.utils.errors)
    if isinstance(error, (FileNotFoundError, ValueError, KeyError)) or describe(error) is not None:
        return EXIT_DATA_ERROR
    return None


def run_main(body: Callable[[], Any]) -> None:
    """Run an entry point's body; a deterministic error exits 65/78 with one line naming it
    (the traceback stays in the log), anything else propagates (exit 1, retried)."""
    try:
        body()
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - classified, then re-raised or turned into an exit code
        code = deterministic_error_code(e)
        if code is None:
            raise
        from fisa.utils.errors import describe

        log.exception("deterministic error (exit %d, not retried)", code)
        print(f"error: {describe(e) or e}", file=sys.stderr)  # `<file>: <what> — <fix>` where it names one
        sys.exit(code)


def preset_entry(config: dict, preset: str, kind: str, name: str) -> tuple[dict, dict] | None:
    """(presets.<preset>, its `<kind>s.<name>` entry; kind: backbone | generator), or None after one
    stderr line naming what is missing and what exists (the caller exits 2, a usage error)."""
    if preset not in config["presets"]:
        print(f"error: --preset {preset!r} not in presets ({sorted(config['presets'])})", file=sys.stderr)
        return None
    entries = config["presets"][preset].get(f"{kind}s", {})
    if name not in entries:
        print(f"error: --{kind} {name!r} not in presets.{preset}.{kind}s ({sorted(entries)})", file=sys.stderr)
        return None
    return config["presets"][preset], entries[name]
