"""``POST /upload/<source>``: building-management servers push their trend reports over HTTP.

The request carries the file in the multipart field ``file`` (what the Siemens uploader script sends) and the
source's token as ``Authorization: Bearer <token>``. The body is streamed to a staging file under the size limit,
the filename is reduced to a safe base name, and the file is ingested at once through the same :class:`Inbox`
code as SFTP drops: the answer is 201 with the report, or 4xx with the reason in one line. Uploads never pass
through the watched inbox, so the watcher cannot take a file twice.

Served by ``fieldstation upload-server`` (systemd/fieldstation-upload.service) on the port the inventory sets
(Siemens Insight servers reach only 80, 8080 or 8081).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any

from fieldstation.ingest.inbox import Inbox, IngestSettings

log = logging.getLogger("fieldstation.upload")

SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
CHUNK = 64 * 1024


class UploadError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def safe_filename(raw: str) -> str:
    """A plain file name: one with a path in it ("../", "/", "\\") or a leading dot is refused, other characters
    than letters, digits, dot, dash and underscore become underscores."""
    if not raw or "/" in raw or "\\" in raw or raw.startswith(".") or "\0" in raw:
        raise UploadError(400, f"filename {raw!r} is not a plain file name")
    return SAFE_NAME.sub("_", raw)[:200]


def _boundary(content_type: str) -> bytes:
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/form-data") or not m:
        raise UploadError(400, "expected a multipart/form-data body with a 'file' field")
    return m.group(1).encode()


def _read_headers(stream: Any, limit: int) -> tuple[dict[str, str], int]:
    headers: dict[str, str] = {}
    used = 0
    while True:
        line = stream.readline(8192)
        used += len(line)
        if used > limit:
            raise UploadError(413, "the upload is larger than this source accepts")
        if line in (b"\r\n", b"\n", b""):
            return headers, used
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()


def receive_file(stream: Any, length: int, content_type: str, dest: Path, max_bytes: int) -> str:
    """Stream the multipart field ``file`` of a body of ``length`` bytes to ``dest``; returns its filename."""
    if length > max_bytes + 64 * 1024:
        raise UploadError(413, f"the upload is {length} bytes; this source accepts at most {max_bytes}")
    boundary = b"--" + _boundary(content_type)
    remaining = length

    def readline() -> bytes:
        nonlocal remaining
        line = stream.readline(min(CHUNK, remaining)) if remaining > 0 else b""
        remaining -= len(line)
        return line

    class _Lines:
        def readline(self, n: int = -1) -> bytes:
            return readline()

    lines = _Lines()
    # Skip to the part named "file".
    while True:
        line = readline()
        if not line:
            raise UploadError(400, "no 'file' field in the multipart body")
        if line.rstrip(b"\r\n") != boundary:
            continue
        headers, _ = _read_headers(lines, 16384)
        disposition = headers.get("content-disposition", "")
        if re.search(r'\bname="file"', disposition):
            m = re.search(r'filename="([^"]*)"', disposition)
            filename = safe_filename(m.group(1) if m else "")
            break
    # Copy until the next boundary; the CRLF before a boundary belongs to it, so hold each line back one step.
    written = 0
    held = b""
    with dest.open("wb") as out:
        while True:
            line = readline()
            if not line:
                raise UploadError(400, "the multipart body ends before its closing boundary")
            if line.startswith(boundary):
                out.write(held.removesuffix(b"\r\n").removesuffix(b"\n") if held.endswith(b"\n") else held)
                break
            out.write(held)
            written += len(held)
            if written > max_bytes:
                raise UploadError(413, f"the file is larger than {max_bytes} bytes")
            held = line
    return filename


def make_handler(settings: IngestSettings, inbox: Inbox, staging: Path) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()  # one ingest at a time: the ledger and the spool see files in order

    class Handler(BaseHTTPRequestHandler):
        server_version = "fieldstation-upload"
        sys_version = ""

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = (json.dumps(body, indent=2) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), format % args)

        def do_POST(self) -> None:
            try:
                self._answer(201, self._upload())
            except UploadError as exc:
                self.close_connection = True  # the rest of a refused body is not read
                self._answer(exc.status, {"error": str(exc)})
            except Exception as exc:  # never a traceback to the client: one line, and the log has the rest
                log.exception("upload to %s failed", self.path)
                self.close_connection = True
                self._answer(500, {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]})

        def do_GET(self) -> None:
            self._answer(405, {"error": "POST a multipart form with a 'file' field to /upload/<source>"})

        def _upload(self) -> dict[str, Any]:
            parts = self.path.split("?", 1)[0].strip("/").split("/")
            if len(parts) != 2 or parts[0] != "upload":
                raise UploadError(404, "the endpoint is POST /upload/<source>")
            source = settings.source(parts[1])
            if source is None or source.token is None:
                raise UploadError(404, f"no upload source {parts[1]!r}")
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                raise UploadError(401, "missing 'Authorization: Bearer <token>'")
            if not hmac.compare_digest(auth.removeprefix("Bearer ").encode(), source.token.get_secret_value().encode()):
                raise UploadError(403, "wrong token for this source")
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                raise UploadError(411, "a Content-Length is required") from None
            with tempfile.TemporaryDirectory(dir=staging) as tmp:
                part = Path(tmp) / "upload.part"
                filename = receive_file(
                    self.rfile, length, self.headers.get("Content-Type", ""), part, source.max_bytes
                )
                final = Path(tmp) / filename
                part.rename(final)
                with lock:
                    report = inbox.ingest(final, PurePosixPath(source.name, filename))
            body: dict[str, Any] = json.loads(report.to_json())
            if report.result == "rejected":
                raise UploadError(422, report.reason or "rejected")
            return body

    return Handler


def serve(settings: IngestSettings, inbox: Inbox, host: str, port: int) -> ThreadingHTTPServer:
    staging = settings.root / "upload-staging"
    staging.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer((host, port), make_handler(settings, inbox, staging))
    server.daemon_threads = True
    return server
