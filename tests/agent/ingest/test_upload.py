"""POST /upload/<source> over real HTTP, handed to a real running inbox (the agent's side): a Siemens report ingested
and answered with its report; tokens, size limit, file names and reserved names enforced; slow and idle clients cut
off by the configured timeouts; 50 uploads at once all answered."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from pydantic import SecretStr

from fieldstation.errors import ConfigError
from fieldstation.ingest.inbox import Inbox, IngestSettings, SourceSettings
from fieldstation.ingest.upload import (
    RESERVED_SUFFIXES,
    UploadSettings,
    UploadSource,
    load_upload_settings,
    serve,
)
from fieldstation.settings import load_settings

FIXTURES = Path(__file__).parents[2] / "fixtures"  # copies of the shared fixtures (tests/fixtures/SOURCES.md)
SIEMENS = FIXTURES / "energycomps" / "value-pipeline" / "tests" / "EvansTestFile.csv"
TOKEN = "Zm9yLXRlc3RzLW9ubHktdXBsb2Fk"  # 28 base64url characters: 168 bits
BOUNDARY = "----fieldstation-test-boundary"


def trend_report(value: int) -> bytes:
    """A small Siemens trend report of its own content (its sha256 differs from every other value's)."""
    return (
        "Key            Name:Suffix                                Trend Definitions Used,,,,\r"
        "Point_1:,CMC.328.RT,,5 minutes,\r"
        "Time Interval:,15 Minutes,,,\r"
        "<>Date,Time,Point_1\r"
        f"12/27/2017,0:00:00,{value}\r"
        "12/27/2017,0:15:00,No Data\r"
    ).encode()


def multipart(content: bytes, filename: str, field: str = "file") -> bytes:
    return (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"site\"\r\n\r\nevans\r\n"
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
        "Content-Type: text/csv\r\n\r\n"
    ).encode() + content + f"\r\n--{BOUNDARY}--\r\n".encode()


class Endpoint:
    """The agent's inbox, running, and the upload server beside it, sharing only the ingest root (as on the Pi)."""

    def __init__(self, root: Path, **limits: Any) -> None:
        self.root = root
        self.ingest = IngestSettings(
            root=root, timezone="America/Chicago", stable_seconds=0.5, poll_seconds=0.1,
            sources=[SourceSettings(name="siemens", format="siemens"), SourceSettings(name="mv2", format="mv2")],
        )
        self.lines: list[str] = []
        self.inbox = Inbox(self.ingest, self.lines.extend).start()
        self.settings = UploadSettings(
            root=root, sources=[UploadSource(name="siemens", token=SecretStr(TOKEN), max_bytes=4096)],
            **{"report_timeout": 30.0, **limits},
        )
        self.server = serve(self.settings, "127.0.0.1", 0)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
        self.inbox.stop()

    def post(self, path: str, content: bytes, filename: str = "EvansTestFile.csv", token: str | None = TOKEN,
             field: str = "file") -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=multipart(content, filename, field),
                                     method="POST")
        req.add_header("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read())


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[Endpoint]:
    e = Endpoint(tmp_path)
    yield e
    e.stop()


def test_an_upload_is_ingested_and_answered_with_its_report(endpoint: Endpoint, tmp_path: Path) -> None:
    content = SIEMENS.read_bytes()
    status, report = endpoint.post("/upload/siemens", content)
    assert status == 201, report
    assert report["result"] == "ingested" and report["points"] == len(endpoint.lines) > 0
    assert report["file"] == "siemens/EvansTestFile.csv" and report["skipped"]
    archived = tmp_path / "archive/siemens/EvansTestFile.csv"
    assert archived.read_bytes() == content  # byte for byte: BOM, CR-only line ends and all
    again_status, again = endpoint.post("/upload/siemens", content)
    assert again_status == 201 and again["result"] == "duplicate" and len(endpoint.lines) == report["points"]
    assert not list((tmp_path / "inbox/siemens").iterdir())  # nothing staged is left behind


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"token": None}, 401, "missing 'Authorization: Bearer <token>'"),
        ({"token": "wrong"}, 403, "wrong token for this source"),
        ({"token": TOKEN[:-1]}, 403, "wrong token for this source"),
        ({"filename": "../../etc/cron.d/evil"}, 400, "is not a plain file name"),
        ({"filename": "..\\evil.csv"}, 400, "is not a plain file name"),
        ({"filename": ".hidden.csv"}, 400, "is not a plain file name"),
        ({"field": "upload"}, 400, "no 'file' field in the multipart body"),
        ({"filename": "x.csv.report.json"}, 400, "ends in '.report.json', which is reserved"),
        ({"filename": "x.csv.REPORT.JSON"}, 400, "ends in '.report.json', which is reserved"),
        ({"filename": "x.csv.error.txt"}, 400, "ends in '.error.txt', which is reserved"),
        ({"filename": "x.csv.part"}, 400, "ends in '.part', which is reserved"),
    ],
)
def test_refused_uploads_say_why(endpoint: Endpoint, tmp_path: Path, kwargs: dict[str, Any], status: int,
                                 message: str) -> None:
    got, body = endpoint.post("/upload/siemens", SIEMENS.read_bytes(), **kwargs)
    assert got == status and message in str(body["error"]) and "\n" not in body["error"]
    assert endpoint.lines == [] and not list((tmp_path / "archive").rglob("*.csv"))
    assert not list((tmp_path / "inbox/siemens").iterdir())
    assert not (tmp_path.parent / "etc").exists()


def test_a_reserved_name_cannot_overwrite_a_report(endpoint: Endpoint, tmp_path: Path) -> None:
    """The finding: an upload named x.csv.report.json was overwritten by the report of a later x.csv (or, the
    other way round, overwrote x.csv's report). Both orders: the report stays the inbox's own."""
    status, _ = endpoint.post("/upload/siemens", trend_report(25), filename="x.csv")
    assert status == 201
    report = tmp_path / "archive/siemens/x.csv.report.json"
    before = report.read_bytes()
    status, body = endpoint.post("/upload/siemens", b'{"result": "forged"}', filename="x.csv.report.json")
    assert status == 400 and "reserved" in body["error"]
    status, _ = endpoint.post("/upload/siemens", trend_report(26), filename="y.csv")  # a later upload, taken
    assert status == 201
    assert report.read_bytes() == before and json.loads(before)["result"] == "ingested"
    assert not (tmp_path / "archive/siemens/y.csv.report.json.report.json").exists()


def test_the_reserved_suffixes_are_all_that_the_inbox_writes_beside_a_file(tmp_path: Path) -> None:
    """RESERVED_SUFFIXES against the real inbox: every file it writes beside an ingested or rejected file ends in one
    of them (a new sidecar would have to be added there)."""
    settings = IngestSettings(root=tmp_path, sources=[SourceSettings(name="siemens", format="siemens")])
    inbox = Inbox(settings, [].extend)
    for name, content in (("good.csv", trend_report(25)), ("bad.csv", b"not,a,trend,report\r\n")):
        (settings.inbox / "siemens" / name).write_bytes(content)
        inbox.ingest(settings.inbox / "siemens" / name, PurePosixPath("siemens", name))
    written = [p.name for d in (settings.archive, settings.rejected) for p in (d / "siemens").iterdir()]
    sidecars = [n.split(".csv", 1)[1] for n in written if not n.endswith(".csv")]
    assert sorted(set(sidecars)) == [".error.txt", ".report.json"]
    assert set(sidecars) <= set(RESERVED_SUFFIXES)


def test_an_oversize_upload_and_unknown_sources_are_refused(endpoint: Endpoint, tmp_path: Path) -> None:
    status, body = endpoint.post("/upload/siemens", b"x" * 100_000)
    assert status == 413 and "at most 4096" in str(body["error"])
    assert endpoint.post("/upload/mv2", b"data")[0] == 404  # not an upload source: no token
    assert endpoint.post("/upload/nosuch", b"data")[0] == 404
    assert endpoint.post("/elsewhere", b"data")[0] == 404
    assert not list((tmp_path / "inbox/siemens").iterdir())


def test_a_file_the_parser_cannot_take_is_422_with_the_reason(endpoint: Endpoint, tmp_path: Path) -> None:
    status, body = endpoint.post("/upload/siemens", b"not,a,trend,report\r\n", filename="junk.csv")
    assert status == 422 and body["error"]
    assert (tmp_path / "rejected/siemens/junk.csv.error.txt").exists()


def test_without_the_agent_the_upload_is_queued_with_202(tmp_path: Path) -> None:
    e = Endpoint(tmp_path, report_timeout=0.0)
    e.inbox.stop()  # the agent is not running
    try:
        status, body = e.post("/upload/siemens", trend_report(25), filename="later.csv")
        assert status == 202 and body["result"].startswith("queued") and body["file"] == "siemens/later.csv"
        assert (tmp_path / "inbox/siemens/later.csv").read_bytes() == trend_report(25)  # the agent takes it later
        status, body = e.post("/upload/siemens", trend_report(26), filename="later.csv")
        assert status == 409 and "already in the inbox" in body["error"]
    finally:
        e.stop()


def test_fifty_uploads_at_once_are_all_answered_and_all_ingested(tmp_path: Path) -> None:
    """The finding: with socketserver's listen backlog of 5, 12 to 18 of 50 concurrent uploads were reset. Here
    fewer threads than uploads, so most of them wait in the listen queue."""
    e = Endpoint(tmp_path, max_connections=8)
    start = threading.Barrier(50)

    def upload(i: int) -> tuple[int, dict[str, Any]]:
        start.wait(30)
        return e.post("/upload/siemens", trend_report(1000 + i), filename=f"trend-{i:02d}.csv")

    try:
        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(upload, range(50)))
    finally:
        e.stop()
    assert [status for status, _ in answers] == [201] * 50, [a for a in answers if a[0] != 201][:3]
    assert all(body["result"] == "ingested" and body["points"] == 1 for _, body in answers)
    assert sorted(p.name for p in (tmp_path / "archive/siemens").glob("*.csv")) == [
        f"trend-{i:02d}.csv" for i in range(50)]
    assert len(e.lines) == 50


def wait_closed(sock: socket.socket, seconds: float, dribble: bool = False) -> bool:
    """Whether the server closed ``sock`` within ``seconds``; when ``dribble``, a header byte is sent every 0.2 s
    meanwhile (a slowloris: each byte comes well within the idle timeout)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.2)
        if readable:
            try:
                return sock.recv(4096) == b""  # EOF: closed by the server without an answer
            except ConnectionResetError:
                return True
        if dribble:
            try:
                sock.send(b"a")
            except (BrokenPipeError, ConnectionResetError):
                return True
    return False


def test_slow_and_idle_clients_are_cut_off_while_uploads_go_on(tmp_path: Path) -> None:
    """The finding: 8 of 8 slow or idle clients still held a thread after 75 s. Idle ones are closed after
    idle_timeout; ones dribbling their headers a byte at a time (never silent that long) at header_timeout."""
    e = Endpoint(tmp_path, idle_timeout=1.0, header_timeout=2.0, max_connections=9)
    clients = []
    try:
        for i in range(8):
            sock = socket.create_connection(("127.0.0.1", e.port), timeout=10)
            if i % 2:
                sock.sendall(b"POST /upload/siemens HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            clients.append(sock)
        status, _ = e.post("/upload/siemens", trend_report(25), filename="meanwhile.csv")  # the ninth slot
        assert status == 201
        closed = [wait_closed(sock, 60, dribble=bool(i % 2)) for i, sock in enumerate(clients)]
        assert closed == [True] * 8
        assert e.post("/upload/siemens", trend_report(26), filename="after.csv")[0] == 201
    finally:
        for sock in clients:
            sock.close()
        e.stop()


def test_a_body_dribbled_past_body_timeout_is_answered_408(tmp_path: Path) -> None:
    e = Endpoint(tmp_path, idle_timeout=1.0, body_timeout=2.0)
    try:
        body = multipart(trend_report(25), "slow.csv")
        sock = socket.create_connection(("127.0.0.1", e.port), timeout=10)
        sock.sendall(
            f"POST /upload/siemens HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        answer = b""
        for byte in body:  # a byte every 0.2 s: never idle for a second, never done in two
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:  # the answer, then the server closes the connection: read it all
                while chunk := sock.recv(4096):
                    answer += chunk
                break
            sock.send(bytes([byte]))
        assert answer.startswith(b"HTTP/1.0 408 "), answer
        assert b"did not arrive within 2 s" in answer
        sock.close()
        assert not (tmp_path / "inbox/siemens/slow.csv").exists() and not list((tmp_path / "inbox/siemens").iterdir())
    finally:
        e.stop()


def test_the_listen_queue_is_a_real_one() -> None:
    settings = UploadSettings(sources=[UploadSource(name="siemens", token=SecretStr(TOKEN))])
    assert settings.listen_backlog >= 128 and settings.max_connections >= 8


@pytest.mark.parametrize("token", [
    "0123456789abcdef0123456789abcdef",  # 32 hex digits: 128 bits
    "Zm9yLXRlc3RzLW9ubHkx_-",  # 22 base64url characters: 132 bits
    "012345678901234567890123456789012345678",  # 39 digits: 129.6 bits
])
def test_tokens_of_128_bits_are_accepted(tmp_path: Path, token: str) -> None:
    path = tmp_path / "upload.toml"
    path.write_text(f'root = "{tmp_path}"\n[[sources]]\nname = "siemens"\ntoken = "{token}"\n')
    assert load_upload_settings(path).sources[0].token.get_secret_value() == token


@pytest.mark.parametrize(("token", "needs"), [
    ("", 22),
    ("short-token", 22),
    ("0123456789abcdef0123456789abcde", 32),  # 31 hex digits: 124 bits
    ("Zm9yLXRlc3RzLW9ubHkx_", 22),  # 21 base64url characters: 126 bits
    ("01234567890123456789012345678901234567", 39),  # 38 digits: 126 bits
    ("a token with spaces in it, long enough", 22),
])
def test_a_token_under_128_bits_is_refused_in_one_line_without_echoing_it(tmp_path: Path, token: str,
                                                                          needs: int) -> None:
    path = tmp_path / "upload.toml"
    path.write_text(f'root = "{tmp_path}"\n[[sources]]\nname = "siemens"\ntoken = "{token}"\n')
    with pytest.raises(ConfigError) as refused:
        load_upload_settings(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: sources.0.token: an upload token needs 128 bits: {needs} characters or more")
    assert "\n" not in message and (not token or token not in message)


def test_an_unknown_option_and_a_missing_inbox_folder_are_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "upload.toml"
    path.write_text(f'root = "{tmp_path}"\nheader_timeout_s = 3\n[[sources]]\nname = "siemens"\ntoken = "{TOKEN}"\n')
    with pytest.raises(ConfigError, match=r"upload.toml: header_timeout_s: unknown option$"):
        load_upload_settings(path)
    settings = UploadSettings(root=tmp_path, sources=[UploadSource(name="siemens", token=SecretStr(TOKEN))])
    with pytest.raises(ConfigError, match=r"inbox/siemens: no such folder \(upload source 'siemens' needs"):
        serve(settings, "127.0.0.1", 0)


@pytest.mark.parametrize("token", ["", "   ", "short-token"])
def test_an_empty_or_short_token_in_agent_toml_is_refused_in_one_line_without_echoing_it(tmp_path: Path,
                                                                                         token: str) -> None:
    """An empty token would match 'Authorization: Bearer ' from anyone on the LAN: agent.toml is refused, naming the
    source's token, never printing it."""
    settings = tmp_path / "agent.toml"
    settings.write_text(f'[ingest]\nenabled = true\n[[ingest.sources]]\nname = "siemens"\nformat = "siemens"\n'
                        f'token = "{token}"\n')
    with pytest.raises(ConfigError) as refused:
        load_settings(settings)
    message = str(refused.value)
    assert message == f"{settings}: ingest.sources.0.token: an upload token needs 12 characters or more (omit it " \
                      "for no upload)"
    assert "short-token" not in message


def test_the_command_serves_from_upload_toml_alone(tmp_path: Path) -> None:
    """`fieldstation upload-server` reads only its own settings (no agent.toml, no spool: the unit's user cannot read
    them), and hands the file to the inbox folder."""
    (tmp_path / "inbox/siemens").mkdir(parents=True)
    path = tmp_path / "upload.toml"
    path.write_text(f'root = "{tmp_path}"\nreport_timeout = 0\n[[sources]]\nname = "siemens"\ntoken = "{TOKEN}"\n')
    command = [str(Path(sys.executable).parent / "fieldstation"), "upload-server", "--host", "127.0.0.1", "--port",
               "0", "--settings", str(path)]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # nothing points at an agent.toml
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("upload endpoint on http://127.0.0.1:"), line
            e = Endpoint.__new__(Endpoint)
            e.port = int(line.rsplit(":", 1)[1].split("/", 1)[0])
            status, body = e.post("/upload/siemens", trend_report(25), filename="cli.csv")
            assert status == 202 and body["file"] == "siemens/cli.csv", body
            assert (tmp_path / "inbox/siemens/cli.csv").read_bytes() == trend_report(25)
        finally:
            proc.terminate()
            proc.wait(30)
    assert proc.returncode == 0
