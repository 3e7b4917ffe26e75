"""``POST /upload/<source>``: building-management servers push their trend reports over HTTP.

The request carries the file in the multipart field ``file`` (what the Siemens uploader script sends) and the
source's token as ``Authorization: Bearer <token>``. The body is streamed under the size limit to a dot-file in
``inbox/<source>/`` (which the inbox never takes), then renamed into place under its safe base name: the agent's
inbox sees the rename and takes the file at once, as it takes an SFTP drop. The server waits for the agent's report
(beside the file in ``archive/`` or ``rejected/``) and answers 201 with it, 422 with the reason of a rejection, 202
when the agent has not taken the file within ``report_timeout``, or 4xx with the reason in one line.

It runs as a user of its own (``fieldstation-upload``) that can write the upload sources' inbox folders and read
their reports, and nothing of the agent's: not agent.toml with the sinks' passwords, not the spool. Its settings
(the ingest root, each source's token and size limit, the timeouts) are ``upload.toml``, which only root and that
user can read.

Slow and idle clients are cut off: a socket silent for ``idle_timeout`` is closed, the request line and headers must
arrive whole within ``header_timeout`` of the connection (a slowloris dribbling a byte every few seconds is cut
there; nothing is read past the headers before the token is checked), the body within ``body_timeout``. At most
``max_connections`` are served at once; the others wait in the kernel's listen queue of ``listen_backlog``.

Served by ``fieldstation upload-server`` (systemd/fieldstation-upload.service) on the port the inventory sets
(Siemens Insight servers reach only 80, 8080 or 8081).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import math
import os
import re
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from fieldstation.errors import ConfigError
from fieldstation.settings import load_toml

log = logging.getLogger("fieldstation.upload")

DEFAULT_SETTINGS = Path("/etc/fieldstation-upload/upload.toml")
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
CHUNK = 64 * 1024
#: A staged upload: a dot-file ending in .part, which the inbox never takes (on two counts).
STAGED_PREFIX = ".upload-"
#: Name endings an upload may not have, each for what the inbox itself writes or passes over: an uploaded
#: ``x.csv.report.json`` would be overwritten by the report of a later ``x.csv`` (and read as one).
RESERVED_SUFFIXES = {
    ".part": "the inbox passes over *.part files (still being written)",
    ".report.json": "the inbox writes <file>.report.json beside each file it takes",
    ".error.txt": "the inbox writes <file>.error.txt beside each file it rejects",
    ".ledger.jsonl": "the inbox's ledger of files seen",
}

#: Token strength: the length times the bits a character carries in the smallest alphabet the token fits, as for a
#: random token (``openssl rand -hex 16``, ``python3 -c 'import secrets; print(secrets.token_urlsafe(16))'``). A token
#: of other characters is credited as base64url, 6 bits a character. The playbook's preflight applies the same
#: table (ansible/roles/preflight/defaults/main.yml, preflight_token_alphabets), keep them together.
MIN_TOKEN_BITS = 128
TOKEN_ALPHABETS = ((r"^[0-9]+$", math.log2(10)), (r"^[0-9A-Fa-f]+$", 4.0), (r"^[\x21-\x7e]+$", 6.0))


def token_bits(token: str) -> float:
    """The bits of a random token of this length and alphabet; 0 for one with spaces or other characters than
    printable ASCII (it could not be sent in an ``Authorization`` header)."""
    for pattern, bits in TOKEN_ALPHABETS:
        if re.match(pattern, token):
            return len(token) * bits
    return 0.0


def min_token_length(token: str) -> int:
    """The shortest token of this token's alphabet that carries MIN_TOKEN_BITS."""
    for pattern, bits in TOKEN_ALPHABETS:
        if re.match(pattern, token):
            return math.ceil(MIN_TOKEN_BITS / bits)
    return math.ceil(MIN_TOKEN_BITS / TOKEN_ALPHABETS[-1][1])


class UploadSource(BaseModel):
    """One source that takes uploads: the same name as its [[ingest.sources]] in agent.toml."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="Its folder under inbox/ and the upload path.")
    token: SecretStr = Field(description=f"Bearer token of POST /upload/<name>: {MIN_TOKEN_BITS} bits or more.")
    max_bytes: int = Field(64 << 20, ge=1, description="Largest upload accepted.")

    @field_validator("token")
    @classmethod
    def _token_is_strong(cls, token: SecretStr) -> SecretStr:
        value = token.get_secret_value()
        if token_bits(value) < MIN_TOKEN_BITS:
            raise ValueError(
                f"an upload token needs {MIN_TOKEN_BITS} bits: {min_token_length(value)} characters or more of its "
                "kind (32 hex digits, 22 base64url characters; printable ASCII, no spaces)"
            )
        return token


class UploadSettings(BaseModel):
    """``upload.toml``: what the upload endpoint needs, and nothing of the agent's."""

    model_config = ConfigDict(extra="forbid")

    root: Path = Field(Path("/srv/data"), description="The ingest root: inbox/, archive/ and rejected/ live here.")
    sources: list[UploadSource] = Field(min_length=1)
    idle_timeout: float = Field(30.0, gt=0, description="A connection silent this long (seconds) is closed.")
    header_timeout: float = Field(30.0, gt=0, description="Request line and headers must arrive within this.")
    body_timeout: float = Field(600.0, gt=0, description="The body must arrive within this of the headers.")
    report_timeout: float = Field(60.0, ge=0, description="How long to wait for the agent's report (then 202).")
    max_connections: int = Field(32, ge=1, description="Connections served at once; more wait in the backlog.")
    listen_backlog: int = Field(128, ge=16, description="The listen queue (capped by net.core.somaxconn).")

    @field_validator("sources")
    @classmethod
    def _unique(cls, v: list[UploadSource]) -> list[UploadSource]:
        names = [s.name for s in v]
        if len(set(names)) != len(names):
            raise ValueError("source names must be unique")
        return v

    def source(self, name: str) -> UploadSource | None:
        return next((s for s in self.sources if s.name == name), None)


def load_upload_settings(path: Path | None) -> UploadSettings:
    """Read upload.toml; every mistake is a one-line ConfigError naming the file and the option."""
    return load_toml(path or DEFAULT_SETTINGS, UploadSettings)


class UploadError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def safe_filename(raw: str) -> str:
    """A plain file name: one with a path in it ("../", "/", "\\") or a leading dot is refused, other characters
    than letters, digits, dot, dash and underscore become underscores; the names of the inbox's own files
    (RESERVED_SUFFIXES) are refused."""
    if not raw or "/" in raw or "\\" in raw or raw.startswith(".") or "\0" in raw:
        raise UploadError(400, f"filename {raw!r} is not a plain file name")
    name = SAFE_NAME.sub("_", raw)[:200]
    for suffix, why in RESERVED_SUFFIXES.items():
        if name.lower().endswith(suffix):
            raise UploadError(400, f"filename {raw!r} ends in {suffix!r}, which is reserved: {why}")
    return name


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


def receive_file(stream: Any, length: int, content_type: str, out: Any, max_bytes: int) -> str:
    """Stream the multipart field ``file`` of a body of ``length`` bytes to the binary file ``out``; returns its
    filename (checked before a byte of the file is written)."""
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


class _Hashing:
    """A binary file that also hashes what it is given (the report names the file by its sha256)."""

    def __init__(self, f: Any) -> None:
        self.f, self.sha = f, hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.f.write(data)
        self.sha.update(data)


class _DeadlineSocket(io.RawIOBase):
    """A connection's reading side with a deadline: each recv waits at most the idle timeout and never past the
    deadline, so neither a silent client nor one dribbling a byte at a time holds a thread past it."""

    def __init__(self, sock: socket.socket, idle: float, deadline: float) -> None:
        self.sock, self.idle, self.deadline = sock, idle, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the client took too long to send its request")
        self.sock.settimeout(min(self.idle, left))
        try:
            return self.sock.recv_into(buffer)
        finally:
            self.sock.settimeout(self.idle)  # for writing the answer


class UploadServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` at once; a listen queue of ``listen_backlog``."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], settings: UploadSettings):
        self.request_queue_size = settings.listen_backlog  # socketserver's default is 5: bursts were reset
        self.slots = threading.BoundedSemaphore(settings.max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Blocking here leaves further connections in the listen queue until a slot frees (at most a timeout).
        self.slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def _new_reports(folder: Path, before: set[str]) -> list[Path]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return [folder / n for n in names if n.endswith(".report.json") and n not in before]


def wait_for_report(settings: UploadSettings, relpath: str, sha256: str, before: dict[Path, set[str]]) -> Any:
    """The agent's report of the file ``relpath`` with this content, among the reports that were not in ``before``
    (each folder's names when the file was handed over); None when none came within ``report_timeout``."""
    deadline = time.monotonic() + settings.report_timeout
    while True:
        for folder, names in before.items():
            for path in _new_reports(folder, names):
                try:
                    report = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue  # being written: read at the next pass
                if report.get("file") == relpath and report.get("sha256") == sha256:
                    return report
                names.add(path.name)  # another file's: not read again
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def make_handler(settings: UploadSettings) -> type[BaseHTTPRequestHandler]:
    placing = threading.Lock()  # the check that a name is free and the rename into the inbox, as one step

    class Handler(BaseHTTPRequestHandler):
        server_version = "fieldstation-upload"
        sys_version = ""
        timeout = settings.idle_timeout  # StreamRequestHandler sets it on the socket

        raw: _DeadlineSocket

        def setup(self) -> None:
            super().setup()
            self.rfile.close()  # the socket's own buffered reader, replaced by one with deadlines
            self.raw = _DeadlineSocket(self.connection, settings.idle_timeout,
                                       time.monotonic() + settings.header_timeout)
            self.rfile = io.BufferedReader(self.raw, CHUNK)

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
            self.close_connection = True  # one request a connection: its deadlines are the connection's
            try:
                status, body = self._upload()
            except UploadError as exc:
                status, body = exc.status, {"error": str(exc)}
            except TimeoutError:
                status, body = 408, {"error": f"the body did not arrive within {settings.body_timeout:g} s"}
            except Exception as exc:  # never a traceback to the client: one line, and the log has the rest
                log.exception("upload to %s failed", self.path)
                status, body = 500, {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
            try:
                self._answer(status, body)
            except OSError as exc:  # the client left, or does not read its answer
                log.info("%s: the answer was not delivered (%s)", self.address_string(), exc)

        def do_GET(self) -> None:
            self._answer(405, {"error": "POST a multipart form with a 'file' field to /upload/<source>"})

        def _upload(self) -> tuple[int, dict[str, Any]]:
            parts = self.path.split("?", 1)[0].strip("/").split("/")
            if len(parts) != 2 or parts[0] != "upload":
                raise UploadError(404, "the endpoint is POST /upload/<source>")
            source = settings.source(parts[1])
            if source is None:
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
            self.raw.deadline = time.monotonic() + settings.body_timeout
            folder = settings.root / "inbox" / source.name
            staged = folder / f"{STAGED_PREFIX}{secrets.token_hex(8)}.part"
            try:
                with staged.open("xb") as f:
                    out = _Hashing(f)
                    filename = receive_file(self.rfile, length, self.headers.get("Content-Type", ""), out,
                                            source.max_bytes)
                sha256 = out.sha.hexdigest()
                relpath = f"{source.name}/{filename}"
                final = folder / filename
                with placing:
                    if final.exists():
                        raise UploadError(409, f"{relpath} is already in the inbox, waiting for the agent")
                    before = {settings.root / d / source.name: set(os.listdir(settings.root / d / source.name))
                              if (settings.root / d / source.name).is_dir() else set()
                              for d in ("archive", "rejected")}
                    staged.rename(final)  # the inbox sees the rename and takes the file at once
            finally:
                staged.unlink(missing_ok=True)
            report = wait_for_report(settings, relpath, sha256, before)
            if report is None:
                return 202, {"file": relpath, "sha256": sha256,
                             "result": f"queued: the agent has not taken it within {settings.report_timeout:g} s"}
            if report.get("result") == "rejected":
                raise UploadError(422, report.get("reason") or "rejected")
            return 201, report

    return Handler


def serve(settings: UploadSettings, host: str, port: int) -> UploadServer:
    """The server, bound and listening (``serve_forever`` runs it); staged files a crash left are removed."""
    for source in settings.sources:
        folder = settings.root / "inbox" / source.name
        if not folder.is_dir():
            raise ConfigError(f"{folder}: no such folder (upload source {source.name!r} needs its inbox folder)")
        for left in folder.glob(f"{STAGED_PREFIX}*.part"):
            left.unlink(missing_ok=True)
    return UploadServer((host, port), make_handler(settings), settings)
