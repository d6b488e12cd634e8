"""``acla.data.fetch`` against a local HTTP server on 127.0.0.1 that honours Range requests."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from acla.data import Archive, FetchError, fetch
from acla.data.__main__ import main as data_main
from acla.data.fetch import downloads_folder, recorded_checksum_path


class ArchiveServer:
    """Serves ``payload`` at /archive.zip; ``cut_after`` makes the next response stop early."""

    def __init__(self) -> None:
        self.payload = b""
        self.cut_after: int | None = None
        self.range_headers: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.range_headers.append(self.headers.get("Range"))
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(server.payload) - 1}/{len(server.payload)}")
                else:
                    self.send_response(200)
                body = server.payload[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    body, server.cut_after = body[: server.cut_after], None
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/archive.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server() -> Iterator[ArchiveServer]:
    instance = ArchiveServer()
    yield instance
    instance.close()


def make_zip(folder: str, files: int = 40) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for index in range(files):
            archive.writestr(f"{folder}/{index:04d}.png", bytes([index % 251]) * 5000)
    return buffer.getvalue()


def test_fetch_downloads_verifies_and_extracts(server: ArchiveServer, tmp_path: Path) -> None:
    server.payload = make_zip("Tiny_HR")
    digest = hashlib.sha256(server.payload).hexdigest()
    archive = Archive("tiny", server.url, "Tiny_HR", 40, sha256=digest)
    target = fetch(archive, tmp_path, progress=False)
    assert target == tmp_path / "Tiny_HR" and len(list(target.glob("*.png"))) == 40
    assert recorded_checksum_path(tmp_path, "tiny").read_text().strip() == digest
    assert fetch(archive, tmp_path, progress=False) == target  # a second fetch does nothing
    assert len(server.range_headers) == 1
    assert not list(tmp_path.glob(".extract-*"))


def test_interrupted_download_resumes_with_a_range_request(server: ArchiveServer, tmp_path: Path) -> None:
    server.payload = make_zip("Tiny_HR")
    server.cut_after = 70_000
    archive = Archive("tiny", server.url, "Tiny_HR", 40)  # no published checksum: recorded on first use
    with pytest.raises(FetchError, match="interrupted at 70000 .*run again to resume"):
        fetch(archive, tmp_path, progress=False)
    partial = downloads_folder(tmp_path) / "archive.zip.part"
    assert partial.stat().st_size == 70_000
    assert not (tmp_path / "Tiny_HR").exists()

    target = fetch(archive, tmp_path, progress=False)
    assert server.range_headers == [None, "bytes=70000-"]
    assert len(list(target.glob("*.png"))) == 40
    recorded = recorded_checksum_path(tmp_path, "tiny").read_text().strip()
    assert recorded == hashlib.sha256(server.payload).hexdigest()


def test_checksum_mismatch_is_refused_and_nothing_is_extracted(server: ArchiveServer, tmp_path: Path) -> None:
    server.payload = make_zip("Tiny_HR")
    archive = Archive("tiny", server.url, "Tiny_HR", 40, sha256="0" * 64)
    with pytest.raises(FetchError, match="corrupt download, sha256 [0-9a-f]{64} != expected 0{64}"):
        fetch(archive, tmp_path, progress=False)
    assert not (tmp_path / "Tiny_HR").exists()
    assert not list(downloads_folder(tmp_path).glob("archive.zip*"))  # deleted, so a rerun starts clean
    assert not recorded_checksum_path(tmp_path, "tiny").exists()


def test_a_corrupt_archive_is_refused_and_nothing_is_extracted(server: ArchiveServer, tmp_path: Path) -> None:
    payload = bytearray(make_zip("Tiny_HR"))
    payload[5000:5100] = b"\xff" * 100  # damage one member's data: its CRC no longer matches
    server.payload = bytes(payload)
    with pytest.raises(FetchError, match="corrupt archive"):
        fetch(Archive("tiny", server.url, "Tiny_HR", 40), tmp_path, progress=False)
    assert not (tmp_path / "Tiny_HR").exists() and not list(tmp_path.glob(".extract-*"))
    server.payload = b"this is not an archive at all" * 100
    with pytest.raises(FetchError, match="neither a zip nor a tar archive"):
        fetch(Archive("junk", server.url, "Tiny_HR", 40), tmp_path, progress=False)


def test_archive_without_the_expected_folder_is_refused(server: ArchiveServer, tmp_path: Path) -> None:
    server.payload = make_zip("Other")
    with pytest.raises(FetchError, match="expected a top-level folder 'Tiny_HR'"):
        fetch(Archive("tiny", server.url, "Tiny_HR", 40), tmp_path, progress=False)
    assert not (tmp_path / "Other").exists()


def test_cli_needs_a_destination(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("ACLA_DATA", raising=False)
    assert data_main(["fetch", "benchmark"]) == 2
    assert "fetch needs --data-root" in capsys.readouterr().err
