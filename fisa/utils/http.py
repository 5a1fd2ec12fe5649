"""Resumable, checksummed HTTP downloads and the lock that keeps two jobs off one file.

`fetch(urls, dest, verify=...)` fetches the first URL that works into `<dest>.part`, resuming
with an HTTP `Range` request after a dropped connection (retries with exponential backoff; a
URL is given up after `retries` consecutive attempts that added no bytes, so a slow but
moving download of a large archive never gives up), calls `verify(part)` and only then
renames it to `dest`: a partial or corrupt body never gets the final name, and a body that
fails verification is deleted (else it would be resumed into forever). `file_lock(path)` is
`filelock.FileLock` with a log line while it waits. Used by `fisa.data.download` (dataset
archives) and `fisa.engine.fetch` (detectron2 checkpoints).

Why not pooch (read in pooch 1.9.0, `core.stream_download` and `HTTPDownloader`): pooch has
checksums (`known_hash`), retries (`retry_if_failed`) and a progress bar, but each attempt
streams into a new temporary file that is deleted when the transfer fails, so a retry starts
from byte 0: it never sends `Range`. The datasets are archives of 1-20 GB (COCO train2017,
ADE20K-full) fetched over links that drop; restarting from zero is what this module exists
to avoid. pooch would also add `requests`, `platformdirs` and `packaging` to the environment,
and it verifies by hash only (an archive with no published checksum is verified here by
reading it back whole, `fisa.utils.archives.verify_integrity`). So the HTTP part stays here
(urllib, about 100 lines); the locking is filelock's.
"""
from __future__ import annotations

import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable

from filelock import FileLock, Timeout

log = logging.getLogger("fisa.utils.http")

CHUNK = 1 << 20
USER_AGENT = "fisa-repro-downloader/0.1 (+https://github.com; research dataset fetch)"

Progress = Callable[[int, "int | None"], None]


class DownloadError(RuntimeError):
    """A file could not be fetched or failed verification (the message names it)."""


def checksum_mismatch(what: str, algo: str, want: str, got: str, path: str | os.PathLike) -> DownloadError:
    """The one wording of a failed checksum (`want` may be a prefix, as detectron2 names carry)."""
    return DownloadError(f"{what}: {algo} mismatch: expected {want}{'...' if len(want) < 64 and algo == 'sha256' else ''}, "
                         f"got {got} ({path}); the file is corrupt or the source changed")


def fetch(urls: Iterable[str], dest: str | os.PathLike, verify: Callable[[Path], None] | None = None, *,
          retries: int = 5, backoff: float = 2.0, timeout: float = 60.0, expected_size: int | None = None,
          progress: Progress | None = None) -> Path:
    """Download to `dest` through `<dest>.part` (resumed across calls and retries), `verify(part)`
    (raises DownloadError) before the rename; returns `dest`. A body that fails `verify` is deleted."""
    dest = Path(dest)
    part = fetch_part(urls, dest, retries=retries, backoff=backoff, timeout=timeout,
                      expected_size=expected_size, progress=progress)
    if verify is not None:
        try:
            verify(part)
        except DownloadError:
            part.unlink(missing_ok=True)
            raise
    os.replace(part, dest)
    return dest


def fetch_part(urls: Iterable[str], dest: str | os.PathLike, *, retries: int = 5, backoff: float = 2.0,
               timeout: float = 60.0, expected_size: int | None = None, progress: Progress | None = None) -> Path:
    """Fetch the first URL that works into `dest.part`, resuming with Range across retries.

    Returns the `.part` path (complete as far as HTTP can tell); the caller verifies and
    renames it (or use `fetch`). Raises DownloadError listing the errors met.
    """
    urls = list(urls)
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    progress = progress or progress_logger(dest.name)
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


def _fetch_once(url: str, part: Path, timeout: float, expected_size: int | None, progress: Progress) -> bool:
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
        if resp.status == 206:
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
            while block := resp.read(CHUNK):
                fh.write(block)
                got += len(block)
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


def progress_logger(name: str, every: float = 30.0) -> Progress:
    """A progress callback that logs `name: N MiB (p%)` at most every `every` seconds (job logs, not a bar)."""
    state = {"next": 0.0}

    def report(got: int, total: int | None) -> None:
        now = time.monotonic()
        if now >= state["next"]:
            state["next"] = now + every
            pct = f" ({100 * got / total:.1f}%)" if total else ""
            log.info("%s: %.1f MiB%s", name, got / 2**20, pct)

    return report


class file_lock:
    """An exclusive lock on `path` (filelock.FileLock) held for a `with` block; logs while it
    waits for another process (pc59 and pc459 jobs share the VOC2010 archive)."""

    def __init__(self, path: str | os.PathLike):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._lock = FileLock(self.path)

    def __enter__(self) -> "file_lock":
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            log.info("waiting for another job holding %s", self.path)
            self._lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()
