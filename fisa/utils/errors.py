"""One-line errors for the command-line entry points.

Every `python -m fisa...` / `python -m analysis...` program ends with `run_cli(main)`. An
error a user can fix (the project's own error types, a missing or unreadable file, a
damaged checkpoint, image or JSON) then ends the program with one line on stderr,

    error: <file>: <what> — <fix>

and exit status 1. The traceback is printed above that line with `--debug`, or when stderr
is not a terminal (a job's log file), so a log always has it and a terminal only the line.
Anything else (a bug) keeps Python's usual traceback.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import sys
import traceback
import zipfile
from pathlib import Path
from typing import Callable

ERROR_EXIT_CODE = 1
# Modules whose exceptions mean "this file could not be read", whatever their type.
_LOADER_MODULES = ("torch/serialization", "torch/_weights_only_unpickler", "safetensors", "/PIL/", "/json/",
                   "/yaml/", "/zipfile", "/pickle", "/imageio/", "/tifffile/")
# Locals that usually hold the file a loader was reading (torch.load's `f`, PIL's `filename`,
# transformers' `checkpoint_file`, ...), tried first, innermost frame first.
_PATH_LOCALS = ("path", "filename", "file", "f", "fp", "checkpoint_file", "resolved_archive_file", "name")


class FisaError(Exception):
    """An error the user can fix: the file it concerns, what is wrong, and what to do."""

    def __init__(self, path: str | os.PathLike, what: str, fix: str):
        self.path, self.what, self.fix = str(path), what, fix
        super().__init__(f"{self.path}: {what} — {fix}")


def _project_error(exc: BaseException) -> bool:
    # "__main__": an error class of the entry point being run (`python -m analysis.aggregate`)
    return any(c.__module__.split(".")[0] in ("fisa", "analysis", "__main__") for c in type(exc).__mro__[:-2])


def _loader_error(exc: BaseException) -> bool:
    if isinstance(exc, (json.JSONDecodeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile,
                        UnicodeDecodeError)):
        return True
    if type(exc).__name__ in ("SafetensorError", "UnidentifiedImageError", "DecompressionBombError", "YAMLError"):
        return True
    frames = traceback.extract_tb(exc.__traceback__)
    return any(m in fr.filename.replace(os.sep, "/") for fr in frames[-3:] for m in _LOADER_MODULES)


def _file_in_frames(exc: BaseException) -> str | None:
    """The file a failing loader was reading: an existing file held by a local of the failing frames."""
    tb, frames = exc.__traceback__, []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        local = frame.f_locals
        extra = tuple(k for k in local if k not in _PATH_LOCALS and k.endswith(("path", "file")))
        for key in _PATH_LOCALS + extra:
            try:
                value = local.get(key)
                if not isinstance(value, (str, os.PathLike, type)) and isinstance(getattr(value, "name", None), str):
                    value = value.name  # an open file object
                if isinstance(value, (str, os.PathLike)) and len(str(value)) < 4096 and os.path.isfile(value):
                    return str(value)
            except Exception:  # noqa: BLE001 - a local that cannot be inspected is simply not the file
                continue
    return None


def fix_for(path: str) -> str:
    """What repairs `path`, from where it lives in the harness's layout."""
    p = Path(path)
    parts = p.parts
    if "runs" in parts and p.name != "config.yaml":
        run = Path(*parts[:parts.index("runs") + 3]) if len(parts) > parts.index("runs") + 2 else p.parent
        return (f"the training run is damaged; rerun only its training: `snakemake -f {run}/done.json` "
                "(it resumes from its last intact checkpoint), then your target")
    if ".fisa" in parts or any(s in p.suffix.lower() for s in (".png", ".jpg", ".jpeg", ".tif")):
        return ("the dataset tree is damaged; re-create it: delete its `<data_root>/.fisa/<dataset>.prepare.done` "
                "marker (and the file) and rerun the workflow")
    if p.suffix in (".pt", ".pth", ".safetensors", ".bin", ".pkl") or "checkpoints" in parts:
        return ("a cached checkpoint is damaged; delete it (and its `<cache_dir>/.done/` marker) and rerun the "
                "workflow, which fetches or re-makes it")
    if p.suffix in (".yaml", ".yml") and "runs" not in parts:
        return "correct the value named above (the keys and types are in workflow/schemas/config.schema.yaml)"
    if "eval" in parts or "efficiency" in parts or "metrics" in parts:
        return f"delete it and rerun your target; Snakemake re-creates it (`snakemake -f {p}`)"
    return "check or re-create this file, then rerun (add --debug for the traceback)"


def describe(exc: BaseException) -> str | None:
    """`<file>: <what> — <fix>` for an error a user can fix; None for anything else (a bug)."""
    if isinstance(exc, FisaError):
        return str(exc)
    # one line: a multi-line message (a config error listing several keys) is joined
    text = re.sub(r":\s*\n\s*", ": ", str(exc).strip())
    what = "; ".join(l.strip() for l in text.splitlines() if l.strip()) or type(exc).__name__
    if isinstance(exc, OSError) and getattr(exc, "filename", None):
        reason = exc.strerror or what
        return f"{exc.filename}: {reason} — {fix_for(str(exc.filename))}"
    if _project_error(exc):
        if " — " in what:  # already `<file>: <what> — <fix>`
            return what
        head = what.split(": ", 1)[0]
        path = head if os.path.isfile(head) else _file_in_frames(exc)
        if path is None:
            return f"{what} — rerun with --debug for the traceback"
        if what.startswith(path):
            what = what[len(path):].lstrip(": ")
        return f"{path}: {what} — {fix_for(path)}"
    if _loader_error(exc) or isinstance(exc, OSError):
        path = _file_in_frames(exc)
        where = path if path is not None else "(file unknown; rerun with --debug)"
        return f"{where}: cannot read it ({type(exc).__name__}: {what}) — {fix_for(path or '')}"
    return None


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run `main(argv)` and exit with its status; user-fixable errors end in one `error:` line.

    `--debug` (removed before `main` parses its arguments) prints the traceback on a
    terminal too.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        status = main(argv)
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - classified below; bugs are re-raised
        line = describe(exc)
        if line is None:
            raise
        if debug or not sys.stderr.isatty():
            traceback.print_exc()
        sys.stderr.flush()
        print(f"error: {line}", file=sys.stderr, flush=True)
        sys.exit(ERROR_EXIT_CODE)
    sys.exit(status or 0)
