"""Download the official archives (DIV2K HR, the SR benchmark archive) into a data root.

Downloads stream to ``<root>/.downloads/<file>.part`` with a progress bar and resume with an HTTP
Range request after an interruption. The finished archive's sha256 is checked against the published
one when the registry has it, else against the one recorded by an earlier fetch; the first verified
fetch records it in ``<root>/.downloads/<name>.sha256`` (keep that file to pin later fetches).
Extraction goes to a staging folder inside the root and is renamed into place only when complete.

Hand-written on the standard library (urllib, zipfile, tarfile) because no maintained package does
resumable + verified + atomic in one place without a service behind it.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from acla.files import atomic_write_text, sha256_file

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Archive:
    name: str
    url: str
    folder: str  # the top-level folder the archive extracts to
    size: int  # images it holds, for the record
    sha256: str | None = None  # published checksum, when the host publishes one


ARCHIVES: dict[str, Archive] = {
    archive.name: archive
    for archive in (
        Archive("DIV2K_train_HR", "http://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip", "DIV2K_train_HR", 800),
        Archive("DIV2K_valid_HR", "http://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip", "DIV2K_valid_HR", 100),
        # EDSR-PyTorch's test archive: benchmark/{Set5,Set14,B100,Urban100}/{HR,LR_bicubic}.
        Archive("benchmark", "https://cv.snu.ac.kr/research/EDSR/benchmark.tar", "benchmark", 0),
    )
}


class FetchError(RuntimeError):
    """A download or archive that could not be completed or verified."""


def downloads_folder(root: Path) -> Path:
    return root / ".downloads"


def recorded_checksum_path(root: Path, name: str) -> Path:
    return downloads_folder(root) / f"{name}.sha256"


def fetch(archive: Archive, root: Path, *, timeout: float = 60.0, progress: bool = True) -> Path:
    """Download, verify and extract ``archive`` under ``root``; returns the extracted folder."""
    root = Path(root)
    target = root / archive.folder
    record = recorded_checksum_path(root, archive.name)
    if target.is_dir() and record.is_file():
        return target
    if target.exists():
        raise FetchError(f"{target} exists but was not made by a verified fetch; move it away and fetch again")
    downloads_folder(root).mkdir(parents=True, exist_ok=True)
    file_name = Path(urllib.request.urlparse(archive.url).path).name or archive.name
    complete = downloads_folder(root) / file_name
    if not complete.is_file():
        partial = complete.with_name(file_name + ".part")
        _download(archive.url, partial, timeout=timeout, progress=progress)
        os.replace(partial, complete)

    actual = sha256_file(complete)
    expected = archive.sha256 or (record.read_text().strip() if record.is_file() else None)
    if expected and actual != expected:
        complete.unlink()
        raise FetchError(f"{archive.name}: corrupt download, sha256 {actual} != expected {expected}; deleted, fetch again")
    try:
        _extract(complete, root, archive.folder)
    except FetchError:
        complete.unlink()
        raise
    atomic_write_text(record, actual + "\n")
    return target


def _download(url: str, partial: Path, *, timeout: float, progress: bool) -> None:
    offset = partial.stat().st_size if partial.is_file() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        raise FetchError(f"{url}: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        raise FetchError(f"{url}: cannot connect ({error})") from error
    with response:
        if offset and response.status != 206:  # the server ignored the range: start over
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        written = offset
        try:
            with open(partial, "ab" if offset else "wb") as out, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, desc=partial.name, disable=not progress
            ) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
        except (http.client.IncompleteRead, ConnectionError, socket.timeout, OSError) as error:
            raise FetchError(f"{url}: download interrupted at {written} bytes ({error}); run again to resume") from error
    if total is not None and written != total:
        raise FetchError(f"{url}: download interrupted at {written} of {total} bytes; run again to resume")


def _extract(archive_path: Path, root: Path, folder: str) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".extract-{folder}-", dir=root))
    try:
        if zipfile.is_zipfile(archive_path):
            with zipfile.ZipFile(archive_path) as archive:
                for member in archive.namelist():
                    if member.startswith("/") or ".." in Path(member).parts:
                        raise FetchError(f"{archive_path}: unsafe member path {member!r}")
                archive.extractall(staging)
        elif tarfile.is_tarfile(archive_path):
            with tarfile.open(archive_path) as archive:
                archive.extractall(staging, filter="data")
        else:
            raise FetchError(f"{archive_path}: neither a zip nor a tar archive (corrupt download?)")
        produced = staging / folder
        if not produced.is_dir():
            raise FetchError(f"{archive_path}: expected a top-level folder {folder!r} in the archive")
        os.replace(produced, root / folder)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as error:
        raise FetchError(f"{archive_path}: corrupt archive ({error})") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
