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

CLI: `python -m fisa.data.download --dataset NAME --root ROOT [--sources F]`.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import logging
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from datetime import datetime, timezone
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

import yaml

from fisa.utils.io import atomic_write_json

log = logging.getLogger("fisa.data.download")

DEFAULT_SOURCES = Path(__file__).with_name("sources.yaml")
CHUNK = 1 << 20
USER_AGENT = "fisa-repro-downloader/0.1 (+https://github.com; research dataset fetch)"


class DownloadError(RuntimeError):
    """A file could not be fetched or failed verification (the message names it)."""


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
            if f.get("kind", _guess_kind(f["name"])) not in ("zip", "tar", "json", "file"):
                raise DownloadError(f"{where} ({f['name']}): unknown kind {f.get('kind')!r}")
    return data["datasets"]


def dataset_spec(name: str, sources: dict) -> dict:
    """The spec of one dataset, with a clear error naming the known ones."""
    if name not in sources:
        raise DownloadError(f"unknown dataset {name!r}; the sources file knows: {', '.join(sorted(sources))}")
    return sources[name]


def _is_hex(s: Any, n: int) -> bool:
    return isinstance(s, str) and len(s) == n and all(c in "0123456789abcdefABCDEF" for c in s)


def _guess_kind(filename: str) -> str:
    low = filename.lower()
    if low.endswith(".zip"):
        return "zip"
    if low.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return "tar"
    if low.endswith(".json"):
        return "json"
    return "file"


# --------------------------------------------------------------------------- paths


def downloads_dir(root: str | os.PathLike) -> Path:
    """Where archives are kept (shared by datasets that use the same file, e.g. pc59/pc459)."""
    return Path(root) / "downloads"


def state_dir(root: str | os.PathLike) -> Path:
    """`ROOT/.fisa`: stage markers and per-file records."""
    return Path(root) / ".fisa"


def marker_path(root: str | os.PathLike, name: str, stage: str) -> Path:
    """`ROOT/.fisa/<name>.<stage>.done` (the workflow's output for a data stage)."""
    return state_dir(root) / f"{name}.{stage}.done"


def _file_record_path(root: Path, filename: str) -> Path:
    return state_dir(root) / "files" / f"{filename}.json"


def _extract_record_path(root: Path, filename: str, dest: str) -> Path:
    tag = hashlib.sha1(dest.encode()).hexdigest()[:8]
    return state_dir(root) / "extracted" / f"{filename}.{tag}.json"


# --------------------------------------------------------------------------- hashing / verification


def file_digest(path: str | os.PathLike, algo: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_integrity(path: str | os.PathLike, kind: str) -> None:
    """Check that an archive/JSON is complete and readable; raise DownloadError naming the file."""
    path = Path(path)
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()  # reads every member and checks its CRC
            if bad is not None:
                raise DownloadError(f"{path}: corrupt zip member {bad!r} (CRC mismatch)")
        elif kind == "tar":
            with tarfile.open(path, "r:*") as tf:
                for member in tf:
                    if member.isfile():
                        fh = tf.extractfile(member)
                        while fh.read(CHUNK):
                            pass
        elif kind == "json":
            with open(path, "rb") as fh:
                json.load(fh)
    except DownloadError:
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as e:
        raise DownloadError(f"{path}: not a complete, readable {kind} file ({type(e).__name__}: {e}); "
                            "the download is truncated or corrupt") from None


def _check_published(path: Path, fspec: dict) -> str | None:
    """Compare with the published checksum, if any; return the algorithm used."""
    for algo in ("sha256", "md5"):
        want = fspec.get(algo)
        if want:
            got = file_digest(path, algo)
            if got.lower() != want.lower():
                raise DownloadError(
                    f"{fspec['name']}: {algo} mismatch: expected {want.lower()}, got {got} ({path}); "
                    "the file is corrupt or the source changed")
            return algo
    return None


# --------------------------------------------------------------------------- HTTP


def http_fetch(urls: Iterable[str], dest: str | os.PathLike, *, retries: int = 5, backoff: float = 2.0,
               timeout: float = 60.0, expected_size: int | None = None,
               progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Fetch the first URL that works into `dest.part`, resuming with Range across retries.

    Returns the `.part` path (complete as far as HTTP can tell); the caller verifies and
    renames it. A connection dropped mid-body resumes from the bytes already on disk;
    a URL is abandoned after `retries` consecutive attempts that added no bytes
    (exponential backoff, `backoff * 2**k` seconds), so a large file over a flaky link
    still completes. Raises DownloadError listing the errors met.
    """
    urls = list(urls)
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        failures = 0  # consecutive attempts that added no bytes: a slow but moving download never gives up
        while failures <= retries:
            if failures:
                delay = backoff * 2 ** (failures - 1)
                log.warning("retrying %s in %.1fs (attempt %d/%d): %s", url, delay, failures, retries, errors[-1])
                time.sleep(delay)
            before = part.stat().st_size if part.exists() else 0
            try:
                if _fetch_once(url, part, timeout, expected_size, progress):
                    return part
            except _Permanent as e:
                errors.append(f"{url}: {e}")
                break
            except (urllib.error.URLError, OSError, http.client.HTTPException, _Incomplete) as e:
                # HTTPException: IncompleteRead / RemoteDisconnected from a connection cut mid-body
                errors.append(f"{url}: {type(e).__name__}: {e}")
                grew = part.exists() and part.stat().st_size > before
                failures = 1 if grew else failures + 1
        log.warning("giving up on %s", url)
    raise DownloadError(f"could not download {dest.name} from any of {len(urls)} URL(s): " + "; ".join(errors))


class _Permanent(Exception):
    """An HTTP error that retrying the same URL will not fix (404, 403, ...)."""


class _Incomplete(Exception):
    """The body ended before Content-Length (dropped connection)."""


def _fetch_once(url: str, part: Path, timeout: float, expected_size: int | None,
                progress: Callable[[int, int | None], None] | None) -> bool:
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            # Range not satisfiable: we already hold the whole file (or more); let verification decide.
            if expected_size is None or have == expected_size:
                return True
            part.unlink()
            raise _Incomplete(f"HTTP 416 with {have} bytes on disk, expected {expected_size}; restarting")
        if e.code in (408, 429) or e.code >= 500:
            raise _Incomplete(f"HTTP {e.code} {e.reason}")
        raise _Permanent(f"HTTP {e.code} {e.reason}")
    with resp:
        status = resp.status
        if status == 206:
            start = _content_range_start(resp.headers.get("Content-Range"))
            if start != have:
                # The server resumed somewhere else: only a restart gives the right bytes.
                part.unlink(missing_ok=True)
                raise _Incomplete(f"server resumed at byte {start}, expected {have}; restarting")
            mode = "ab"
        else:
            if have:
                log.info("%s ignored the Range request; restarting from byte 0", url)
            have, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else expected_size
        got = have
        with open(part, mode) as fh:
            while True:
                block = resp.read(CHUNK)
                if not block:
                    break
                fh.write(block)
                got += len(block)
                if progress:
                    progress(got, total)
    if total is not None and got < total:
        raise _Incomplete(f"connection closed after {got} of {total} bytes")
    return True


def _content_range_start(value: str | None) -> int:
    # "bytes 100-999/1000"
    try:
        return int(value.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return -1


# --------------------------------------------------------------------------- one file


def ensure_file(root: str | os.PathLike, fspec: dict, dataset: str, *, retries: int = 5, backoff: float = 2.0,
                timeout: float = 60.0) -> dict:
    """Make sure one source file is present and verified under `ROOT/downloads/`; return its record."""
    root = Path(root)
    name = fspec["name"]
    kind = fspec.get("kind", _guess_kind(name))
    dest = downloads_dir(root) / name
    rec_path = _file_record_path(root, name)
    if dest.exists():
        record = json.loads(rec_path.read_text()) if rec_path.exists() else None
        if record is not None:
            got = file_digest(dest)
            if got != record["sha256"]:
                raise DownloadError(
                    f"{dest}: sha256 {got} differs from the one recorded when it was verified "
                    f"({record['sha256']}, {rec_path}); the file changed on disk. Delete it to download again.")
            log.info("%s: present, recorded sha256 matches", name)
            return record
        # Present but never verified (e.g. a manual download just placed there): verify now.
        return _verify_and_record(root, dest, fspec, kind, dataset, source="local file")
    if fspec.get("manual"):
        raise ManualDownloadRequired(manual_message(dataset, fspec, root))
    part = http_fetch(fspec["urls"], dest, retries=retries, backoff=backoff, timeout=timeout,
                      expected_size=fspec.get("size"), progress=_progress_logger(name))
    try:
        record = _verify_and_record(root, part, fspec, kind, dataset, source=fspec["urls"][0], final=dest)
    except DownloadError:
        # A complete but corrupt body would be resumed into forever: discard it.
        part.unlink(missing_ok=True)
        raise
    return record


def _verify_and_record(root: Path, path: Path, fspec: dict, kind: str, dataset: str, *, source: str,
                       final: Path | None = None) -> dict:
    if fspec.get("size") is not None and path.stat().st_size != int(fspec["size"]):
        raise DownloadError(f"{fspec['name']}: size {path.stat().st_size} bytes, expected {fspec['size']} ({path})")
    algo = _check_published(path, fspec)
    if algo is None:
        verify_integrity(path, kind)  # no published checksum: the archive must at least read back whole
    sha = file_digest(path)
    if final is not None:
        os.replace(path, final)
        path = final
    record = {
        "name": fspec["name"], "dataset": dataset, "path": str(path), "bytes": path.stat().st_size,
        "sha256": sha, "verified_by": f"published {algo}" if algo else f"{kind} integrity",
        "source": source, "recorded_at": _now(),
    }
    atomic_write_json(_file_record_path(root, fspec["name"]), record)
    return record


def _progress_logger(name: str) -> Callable[[int, int | None], None]:
    state = {"next": 0.0}

    def report(got: int, total: int | None) -> None:
        now = time.monotonic()
        if now >= state["next"]:
            state["next"] = now + 30
            pct = f" ({100 * got / total:.1f}%)" if total else ""
            log.info("%s: %.1f MiB%s", name, got / 2**20, pct)

    return report


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


def _safe_members_zip(zf: zipfile.ZipFile, archive: Path) -> list[zipfile.ZipInfo]:
    out = []
    for info in zf.infolist():
        p = Path(info.filename)
        if p.is_absolute() or ".." in p.parts:
            raise DownloadError(f"{archive}: unsafe member path {info.filename!r}")
        out.append(info)
    return out


def extract(archive: str | os.PathLike, dest: str | os.PathLike, *, kind: str | None = None,
            strip: str | None = None, only: list[str] | None = None) -> list[str]:
    """Extract `archive` into `dest` through a staging folder; return the top-level names moved in.

    `strip`: a leading folder to drop from member paths; `only`: member prefixes to keep.
    Existing folders in `dest` are merged into (files are replaced).
    """
    archive, dest = Path(archive), Path(dest)
    kind = kind or _guess_kind(archive.name)
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f".staging-{archive.name}"
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted run
    staging.mkdir()
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                members = [m for m in _safe_members_zip(zf, archive) if _keep(m.filename, only)]
                zf.extractall(staging, members)
        elif kind == "tar":
            with tarfile.open(archive, "r:*") as tf:
                members = [m for m in tf.getmembers() if _keep(m.name, only)]
                tf.extractall(staging, members, filter="data")  # 'data' rejects absolute/.. paths and links out
        elif kind in ("json", "file"):
            shutil.copy2(archive, staging / archive.name)
        else:
            raise DownloadError(f"{archive}: cannot extract kind {kind!r}")
        src = staging / strip if strip else staging
        if strip and not src.is_dir():
            raise DownloadError(f"{archive}: expected a top-level folder {strip!r} in the archive")
        moved = []
        for entry in sorted(src.iterdir()):
            if entry.name.startswith(".staging-"):
                continue
            _merge_move(entry, dest / entry.name)
            moved.append(entry.name)
        return moved
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as e:
        raise DownloadError(f"extracting {archive} into {dest} failed: {e}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _keep(member: str, only: list[str] | None) -> bool:
    return not only or any(member == p.rstrip("/") or member.startswith(p.rstrip("/") + "/") for p in only)


def _merge_move(src: Path, dst: Path) -> None:
    if src.is_dir() and dst.is_dir():
        for child in src.iterdir():
            _merge_move(child, dst / child.name)
        return
    if dst.is_dir() and not src.is_dir():
        shutil.rmtree(dst)
    os.replace(src, dst)


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
            verify_integrity(source, ex.get("kind", _guess_kind(source.name)))
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


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (fcntl.flock) held for the block; waits for other holders."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another job holding %s", path)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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
