"""Download (or locate, for registration-only datasets) the raw archives of one benchmark.

Every URL, checksum and archive layout lives in one data file, `fisa/data/sources.yaml`
(pass another with `--sources`). For each file of a dataset:

1. If a verified copy is already in `ROOT/downloads/` (its sha256 recorded in
   `ROOT/.fisa/files/<file>.json` on first verification), the recorded sha256 is
   checked again: a file that changed on disk is an error, never silently used.
2. Otherwise it is fetched to `<file>.part` with HTTP Range resume and retries with
   exponential backoff (a dropped connection resumes where it stopped; a server that
   ignores Range restarts the file), then verified: against the published checksum
   where one exists, else by archive integrity (every zip member's CRC, every tar
   member readable, JSON parsable). Only a verified file is renamed to its final name,
   so a partial or corrupt download never counts as done.
3. Archives are extracted into a staging folder beside their destination and moved
   into place, then recorded in `ROOT/.fisa/extracted/<file>.json`; an interrupted
   extraction is redone.

Registration-only files (Mapillary Vistas, ADE20K full) are never fetched: if the
archive (or an already extracted tree) is not there, the step stops with a message
that says where to get it and exactly where to put it, exits non-zero and writes no
marker. The last act of a successful run is `ROOT/.fisa/<name>.download.done`.

The plumbing is not here: HTTP with resume, retries and the file lock are `fisa.utils.http`,
integrity checks and staged extraction `fisa.utils.archives`; this module is the datasets'
orchestration (the sources file, records, manual datasets, markers) and its CLI.

CLI: `python -m fisa.data.download --dataset NAME --root ROOT [--sources F]`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from fisa.utils.archives import KINDS, extract, guess_kind, verify_integrity
from fisa.utils.http import DownloadError, checksum_mismatch, fetch, file_lock
from fisa.utils.io import atomic_write_json, file_digest, sha256_of
from fisa.utils.markers import MARKER_DIR, marker_path

log = logging.getLogger("fisa.data.download")

DEFAULT_SOURCES = Path(__file__).with_name("sources.yaml")
class ManualDownloadRequired(DownloadError):
    """A registration-only file is missing; the message says where to get it and where to put it."""


# --------------------------------------------------------------------------- sources


def load_sources(path: str | os.PathLike | None = None) -> dict:
    """Read and check the sources file; returns {dataset: spec}."""
    path = Path(path) if path else DEFAULT_SOURCES
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DownloadError(f"sources file not found: {path}") from None
    except yaml.YAMLError as e:
        raise DownloadError(f"sources file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), dict):
        raise DownloadError(f"sources file {path}: expected a top-level 'datasets' mapping")
    for name, spec in data["datasets"].items():
        if not isinstance(spec, dict) or not isinstance(spec.get("files", []), list):
            raise DownloadError(f"sources file {path}: datasets.{name} must be a mapping with a 'files' list")
        for i, f in enumerate(spec.get("files", [])):
            where = f"sources file {path}: datasets.{name}.files[{i}]"
            if not isinstance(f, dict) or "name" not in f:
                raise DownloadError(f"{where}: each file needs a 'name'")
            if not f.get("manual") and not f.get("urls"):
                raise DownloadError(f"{where} ({f['name']}): needs 'urls' (or 'manual: true')")
            for key in ("md5", "sha256"):
                if f.get(key) is not None and not _is_hex(f[key], 32 if key == "md5" else 64):
                    raise DownloadError(f"{where} ({f['name']}): '{key}' is not a hex digest: {f[key]!r}")
            if f.get("kind", guess_kind(f["name"])) not in KINDS:
                raise DownloadError(f"{where} ({f['name']}): unknown kind {f.get('kind')!r}")
    return data["datasets"]


def dataset_spec(name: str, sources: dict) -> dict:
    """The spec of one dataset, with a clear error naming the known ones."""
    if name not in sources:
        raise DownloadError(f"unknown dataset {name!r}; the sources file knows: {', '.join(sorted(sources))}")
    return sources[name]


def _is_hex(s: Any, n: int) -> bool:
    return isinstance(s, str) and len(s) == n and all(c in "0123456789abcdefABCDEF" for c in s)


# --------------------------------------------------------------------------- paths


def downloads_dir(root: str | os.PathLike) -> Path:
    """Where archives are kept (shared by datasets that use the same file, e.g. pc59/pc459)."""
    return Path(root) / "downloads"


def state_dir(root: str | os.PathLike) -> Path:
    """`ROOT/.fisa`: stage markers (fisa.utils.markers.marker_path) and per-file records."""
    return Path(root) / MARKER_DIR


def _file_record_path(root: Path, filename: str) -> Path:
    return state_dir(root) / "files" / f"{filename}.json"


def _extract_record_path(root: Path, filename: str, dest: str) -> Path:
    tag = hashlib.sha1(dest.encode()).hexdigest()[:8]
    return state_dir(root) / "extracted" / f"{filename}.{tag}.json"


# --------------------------------------------------------------------------- verification


def _check_published(path: Path, fspec: dict) -> str | None:
    """Compare with the published checksum, if any; return the algorithm used."""
    for algo in ("sha256", "md5"):
        want = fspec.get(algo)
        if want:
            got = file_digest(path, algo)
            if got.lower() != want.lower():
                raise checksum_mismatch(fspec["name"], algo, want.lower(), got, path)
            return algo
    return None


# --------------------------------------------------------------------------- one file


def ensure_file(root: str | os.PathLike, fspec: dict, dataset: str, *, retries: int = 5, backoff: float = 2.0,
                timeout: float = 60.0) -> dict:
    """Make sure one source file is present and verified under `ROOT/downloads/`; return its record."""
    root = Path(root)
    name = fspec["name"]
    kind = fspec.get("kind", guess_kind(name))
    dest = downloads_dir(root) / name
    rec_path = _file_record_path(root, name)
    if dest.exists():
        record = json.loads(rec_path.read_text()) if rec_path.exists() else None
        if record is not None:
            got = sha256_of(dest)
            if got != record["sha256"]:
                raise DownloadError(
                    f"{dest}: sha256 {got} differs from the one recorded when it was verified "
                    f"({record['sha256']}, {rec_path}); the file changed on disk. Delete it to download again.")
            log.info("%s: present, recorded sha256 matches", name)
            return record
        # Present but never verified (e.g. a manual download just placed there): verify now.
        return _record(root, dest, fspec, dataset, _verify(dest, fspec, kind), source="local file")
    if fspec.get("manual"):
        raise ManualDownloadRequired(manual_message(dataset, fspec, root))
    verified_by = []
    fetch(fspec["urls"], dest, lambda part: verified_by.append(_verify(part, fspec, kind)), retries=retries,
          backoff=backoff, timeout=timeout, expected_size=fspec.get("size"))
    return _record(root, dest, fspec, dataset, verified_by[0], source=fspec["urls"][0])


def _verify(path: Path, fspec: dict, kind: str) -> str:
    """Check size, then the published checksum, else the archive's integrity; returns how it was verified."""
    if fspec.get("size") is not None and path.stat().st_size != int(fspec["size"]):
        raise DownloadError(f"{fspec['name']}: size {path.stat().st_size} bytes, expected {fspec['size']} ({path})")
    algo = _check_published(path, fspec)
    if algo is None:
        verify_integrity(path, kind)  # no published checksum: the archive must at least read back whole
    return f"published {algo}" if algo else f"{kind} integrity"


def _record(root: Path, path: Path, fspec: dict, dataset: str, verified_by: str, *, source: str) -> dict:
    record = {
        "name": fspec["name"], "dataset": dataset, "path": str(path), "bytes": path.stat().st_size,
        "sha256": sha256_of(path), "verified_by": verified_by, "source": source, "recorded_at": _now(),
    }
    atomic_write_json(_file_record_path(root, fspec["name"]), record)
    return record


def manual_message(dataset: str, fspec: dict, root: str | os.PathLike) -> str:
    """The instructions printed when a registration-only archive is missing."""
    dest = (downloads_dir(root) / fspec["name"]).resolve()
    lines = [
        f"{dataset}: {fspec['name']} needs registration and cannot be downloaded automatically.",
        f"  Get it from: {fspec.get('homepage') or '(see docs/data.md)'}",
    ]
    if fspec.get("instructions"):
        lines.append(f"  {fspec['instructions'].strip()}")
    lines.append(f"  Then put the archive exactly here: {dest}")
    if fspec.get("present_if"):
        wanted = [" or ".join(p) if isinstance(p, list) else p for p in fspec["present_if"]]
        lines.append("  (or, if you already extracted it, make these exist under "
                     f"{Path(root).resolve()}: {', '.join(wanted)})")
    lines.append(f"  and run again: python -m fisa.data.download --dataset {dataset} --root {root}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- extraction


def ensure_extracted(root: str | os.PathLike, fspec: dict, record: dict) -> list[dict]:
    """Extract a verified file (and its nested archives) unless the same bytes were already extracted."""
    root = Path(root)
    done = []
    for ex in _extract_steps(fspec):
        rec_path = _extract_record_path(root, fspec["name"], ex["to"] + "|" + ex.get("member", ""))
        if rec_path.exists():
            prev = json.loads(rec_path.read_text())
            if prev.get("sha256") == record["sha256"] and all((root / ex["to"] / t).exists() for t in prev["entries"]):
                done.append(prev)
                continue
        source = Path(record["path"])
        if ex.get("member"):
            # An archive inside an already extracted archive (COCO panoptic PNG zips).
            source = root / ex["member"]
            if not source.exists():
                raise DownloadError(f"{fspec['name']}: nested archive {ex['member']} not found under {root}")
            verify_integrity(source, ex.get("kind", guess_kind(source.name)))
        log.info("extracting %s -> %s", source.name, root / ex["to"])
        entries = extract(source, root / ex["to"], kind=ex.get("kind") or (None if ex.get("member") else fspec.get("kind")),
                          strip=ex.get("strip"), only=ex.get("only"))
        rec = {"file": fspec["name"], "sha256": record["sha256"], "to": ex["to"], "member": ex.get("member"),
               "entries": entries, "extracted_at": _now()}
        atomic_write_json(rec_path, rec)
        done.append(rec)
    return done


def _extract_steps(fspec: dict) -> list[dict]:
    ex = fspec.get("extract")
    if ex is None:
        return []
    steps = [ex] if isinstance(ex, dict) else list(ex)
    for s in steps:
        if "to" not in s:
            raise DownloadError(f"sources: {fspec['name']}: every 'extract' step needs 'to'")
    return steps


# --------------------------------------------------------------------------- one dataset


def download_dataset(name: str, root: str | os.PathLike, sources: dict | str | os.PathLike | None = None, *,
                     retries: int = 5, backoff: float = 2.0, timeout: float = 60.0,
                     delete_archives: bool = False) -> dict:
    """Fetch, verify and extract every file of dataset `name` under `root`; write its marker last.

    A file whose `present_if` paths all exist under `root` (a tree prepared elsewhere,
    e.g. for FC-CLIP) is taken as is and recorded as such. Raises ManualDownloadRequired
    (no marker written) when a registration-only archive is missing. `delete_archives`
    removes an archive once extracted (its record stays; `present_if` then keeps later
    runs from fetching it again).
    """
    root = Path(root)
    if not isinstance(sources, dict):
        sources = load_sources(sources)
    spec = dataset_spec(name, sources)
    downloads_dir(root).mkdir(parents=True, exist_ok=True)  # so a manual archive can be dropped there
    missing_manual = []
    files = []
    for fspec in spec.get("files", []):
        fspec = {"homepage": spec.get("homepage"), **fspec}
        present = fspec.get("present_if")
        if present and _present(root, present) and not (downloads_dir(root) / fspec["name"]).exists():
            log.info("%s: %s already extracted (%s); not downloading", name, fspec["name"], present)
            files.append({"name": fspec["name"], "status": "found extracted", "present_if": present})
            continue
        # pc59 and pc459 share VOC2010: jobs of both may run at once, so one file, one writer.
        with file_lock(downloads_dir(root) / f".{fspec['name']}.lock"):
            try:
                record = ensure_file(root, fspec, name, retries=retries, backoff=backoff, timeout=timeout)
            except ManualDownloadRequired as e:
                missing_manual.append(str(e))
                continue
            extracted = ensure_extracted(root, fspec, record)
            deleted = bool(delete_archives and extracted and fspec.get("present_if")
                           and _present(root, fspec["present_if"]))
            if deleted:
                Path(record["path"]).unlink()
        files.append({"name": fspec["name"], "status": "verified", "sha256": record["sha256"],
                      "bytes": record["bytes"], "verified_by": record["verified_by"],
                      "extracted_to": [e["to"] for e in extracted], "archive_deleted": deleted})
    if missing_manual:
        raise ManualDownloadRequired("\n\n".join(missing_manual))
    marker = {"dataset": name, "stage": "download", "root": str(root.resolve()), "files": files,
              "finished_at": _now()}
    atomic_write_json(marker_path(root, name, "download"), marker)
    return marker


def _present(root: Path, present_if: list) -> bool:
    """All entries exist; an entry that is a list is satisfied by any of its alternatives."""
    return all(any((root / a).exists() for a in (p if isinstance(p, list) else [p])) for p in present_if)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 done, 1 error, 2 manual download needed)."""
    p = argparse.ArgumentParser(prog="python -m fisa.data.download", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="registry name (coco, ade150, ade847, pc59, pc459, mapillary, refcoco, refcocoplus)")
    p.add_argument("--root", default=os.environ.get("DETECTRON2_DATASETS", "datasets"), help="data root")
    p.add_argument("--sources", default=None, help=f"sources file (default {DEFAULT_SOURCES})")
    p.add_argument("--retries", type=int, default=5)
    p.add_argument("--backoff", type=float, default=2.0, help="first retry delay in seconds (doubles each retry)")
    p.add_argument("--timeout", type=float, default=60.0, help="socket timeout in seconds")
    p.add_argument("--delete-archives", action="store_true",
                   help="delete each archive once extracted (saves disk; later runs see the extracted tree)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        marker = download_dataset(args.dataset, args.root, args.sources, retries=args.retries,
                                  backoff=args.backoff, timeout=args.timeout, delete_archives=args.delete_archives)
    except ManualDownloadRequired as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.dataset}: download done ({len(marker['files'])} files) -> {marker_path(args.root, args.dataset, 'download')}")
    return 0


if __name__ == "__main__":
    from fisa.utils.errors import run_cli

    run_cli(main)  # one `error: <file>: <what> — <fix>` line for a user-fixable error
