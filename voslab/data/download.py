"""Resumable, verified downloads and safe archive extraction (standard library + tqdm).

`download` writes to ``<dest>.part``, resumes it with an HTTP ``Range`` request, checks the sha256
when one is given and renames atomically, so an interrupted or corrupt download never looks finished.
`extract` unpacks zip and tar archives after checking that no member escapes the destination.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from voslab.errors import VOSDataError
from voslab.utils import sha256sum

__all__ = ["download", "extract", "extract_dataset", "sha256sum"]  # sha256sum: re-exported from voslab.utils

CHUNK = 1 << 20  # 1 MiB per read


def download(url: str, dest: str | Path, sha256: str | None = None, resume: bool = True,
             progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` (a file path, or an existing folder to keep the URL's file name).

    An existing ``dest`` is kept when its checksum matches (or no checksum is given). A partial
    ``dest.part`` is resumed when ``resume`` and the server honours ``Range``; otherwise restarted.
    Raises `VOSDataError` on a checksum mismatch (the bad file is deleted) and ``ConnectionError``
    naming the URL when the server cannot be reached.
    """
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / (Path(unquote(urlparse(url).path)).name or "download")
    if dest.is_file() and (sha256 is None or sha256sum(dest) == sha256.lower()):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if not resume:
        part.unlink(missing_ok=True)
    _fetch_into(url, part, progress, timeout)
    if sha256 is not None:
        got = sha256sum(part)
        if got != sha256.lower():
            part.unlink()
            raise VOSDataError(f"checksum mismatch for {url}: expected sha256 {sha256.lower()}, got {got}. "
                               f"The partial file was deleted; run again to re-download (if it keeps failing, "
                               "the server's file changed: check the URL and the expected checksum)")
    os.replace(part, dest)  # atomic: dest exists only when complete (and verified)
    return dest


def _fetch_into(url: str, part: Path, progress: bool, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (starting over when the server ignores ``Range``)."""
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "voslab"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # range not satisfiable: the part file is already complete
            return
        raise ConnectionError(f"downloading {url} failed: HTTP {err.code} {err.reason}; check the URL, "
                              "or download it in a browser and pass the file with --archive") from err
    except (urllib.error.URLError, OSError) as err:
        raise ConnectionError(f"cannot reach {url} ({err}); check your network/proxy, or download the file "
                              "another way and pass it with --archive") from err
    with response:
        resumed = offset and getattr(response, "status", 200) == 206
        mode, start = ("ab", offset) if resumed else ("wb", 0)
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        with open(part, mode) as f, _progress_bar(total, start, part.name, progress) as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                f.write(block)
                bar.update(len(block))
    size = part.stat().st_size
    if total is not None and size != total:  # the server closed the connection early
        raise ConnectionError(f"download of {url} stopped at {size} of {total} bytes; run it again to resume "
                              f"from {part}")


def _progress_bar(total: int | None, initial: int, name: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                disable=not enabled)


def extract(archive: str | Path, dest: str | Path) -> Path:
    """Unpack a ``.zip`` or ``.tar[.gz|.bz2|.xz]`` archive into ``dest``; returns ``dest``.

    Every member is checked first: absolute paths, ``..`` components and links pointing outside
    ``dest`` raise `VOSDataError` before anything is written.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"{archive}: no such archive (check the path)")
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                _check_member(name, archive)
            zf.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for member in members:
                _check_member(member.name, archive)
                if member.issym() or member.islnk():
                    _check_member(str(PurePosixPath(member.name).parent / member.linkname)
                                  if member.issym() else member.linkname, archive)
                elif not (member.isfile() or member.isdir()):
                    raise VOSDataError(f"{archive}: member {member.name!r} is a device/fifo; refusing to extract")
            tf.extractall(dest, members=members, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    else:
        raise VOSDataError(f"{archive}: not a zip or tar archive (corrupt or incomplete download?); "
                           "delete it and download again")
    return dest


def _check_member(name: str, archive: Path) -> None:
    """Reject member names that would land outside the extraction folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise VOSDataError(f"{archive}: member {name!r} would be written outside the destination "
                           "(path traversal); refusing to extract this archive")


def extract_dataset(archive: str | Path, dest: str | Path, marker: str = "JPEGImages") -> Path:
    """Extract ``archive`` and move the folder that holds ``marker`` (at any depth, e.g. the
    release's ``DAVIS/`` wrapper) to ``dest``. Returns ``dest``; raises when no such folder exists."""
    dest = Path(dest)
    staging = dest.parent / f".{dest.name}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        extract(archive, staging)
        found = sorted(staging.rglob(marker), key=lambda p: len(p.parts))
        if not found:
            raise VOSDataError(f"{archive}: no {marker} folder inside the archive; is it the right download?")
        entries = list(found[0].parent.iterdir())
        clashes = [str(dest / e.name) for e in entries if (dest / e.name).exists()]
        if clashes:
            raise VOSDataError(f"{clashes[0]} already exists; extract into an empty folder or delete it first")
        dest.mkdir(parents=True, exist_ok=True)
        for entry in entries:
            shutil.move(str(entry), str(dest / entry.name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
