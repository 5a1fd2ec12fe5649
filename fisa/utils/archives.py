"""Archives: read-back integrity checks and extraction through a staging folder.

`verify_integrity(path, kind)` reads a zip (every member's CRC), tar (every member) or JSON
file back whole: the check of a download that has no published checksum. `extract(archive,
dest)` unpacks into `<dest>/.staging-<archive>` and moves the result into place, so an
interrupted extraction leaves no half tree under its final name; member paths that leave
`dest` (absolute, `..`, links out) are refused.
"""
from __future__ import annotations

import json
import os
import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path

from fisa.utils.http import CHUNK, DownloadError

KINDS = ("zip", "tar", "json", "file")


def guess_kind(filename: str) -> str:
    """zip | tar | json | file, from the file name."""
    low = filename.lower()
    if low.endswith(".zip"):
        return "zip"
    if low.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return "tar"
    if low.endswith(".json"):
        return "json"
    return "file"


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
    kind = kind or guess_kind(archive.name)
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
