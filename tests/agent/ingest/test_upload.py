"""POST /upload/<source> over real HTTP: a Siemens report ingested and answered with its report; tokens, size
limit and file names enforced."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from fieldstation.ingest.inbox import Inbox, IngestSettings, SourceSettings
from fieldstation.ingest.upload import serve
from fieldstation.settings import ConfigError, load_settings

FIXTURES = Path(__file__).parents[2] / "fixtures"  # copies of the shared fixtures (tests/fixtures/SOURCES.md)
SIEMENS = FIXTURES / "energycomps" / "value-pipeline" / "tests" / "EvansTestFile.csv"
TOKEN = "s3cret-upload-token"


class Endpoint:
    def __init__(self, root: Path) -> None:
        self.settings = IngestSettings(
            root=root, timezone="America/Chicago",
            sources=[SourceSettings(name="siemens", format="siemens", token=SecretStr(TOKEN), max_bytes=4096),
                     SourceSettings(name="mv2", format="mv2")],  # no token: no HTTP upload
        )
        self.lines: list[str] = []
        self.inbox = Inbox(self.settings, self.lines.extend)
        self.server = serve(self.settings, self.inbox, "127.0.0.1", 0)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def post(self, path: str, content: bytes, filename: str = "EvansTestFile.csv", token: str | None = TOKEN,
             field: str = "file") -> tuple[int, dict[str, object]]:
        boundary = "----fieldstation-test-boundary"
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"site\"\r\n\r\nevans\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            "Content-Type: text/csv\r\n\r\n"
        ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method="POST")
        req.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
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


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"token": None}, 401, "missing 'Authorization: Bearer <token>'"),
        ({"token": "wrong"}, 403, "wrong token for this source"),
        ({"filename": "../../etc/cron.d/evil"}, 400, "is not a plain file name"),
        ({"filename": "..\\evil.csv"}, 400, "is not a plain file name"),
        ({"filename": ".hidden.csv"}, 400, "is not a plain file name"),
        ({"field": "upload"}, 400, "no 'file' field in the multipart body"),
    ],
)
def test_refused_uploads_say_why(endpoint: Endpoint, tmp_path: Path, kwargs: dict[str, object], status: int,
                                 message: str) -> None:
    got, body = endpoint.post("/upload/siemens", SIEMENS.read_bytes(), **kwargs)  # type: ignore[arg-type]
    assert got == status and message in str(body["error"])
    assert endpoint.lines == [] and not list((tmp_path / "archive").rglob("*.csv"))
    assert not (tmp_path.parent / "etc").exists()


def test_an_oversize_upload_and_unknown_sources_are_refused(endpoint: Endpoint) -> None:
    status, body = endpoint.post("/upload/siemens", b"x" * 100_000)
    assert status == 413 and "at most 4096" in str(body["error"])
    assert endpoint.post("/upload/mv2", b"data")[0] == 404  # no token configured: not uploadable
    assert endpoint.post("/upload/nosuch", b"data")[0] == 404
    assert endpoint.post("/elsewhere", b"data")[0] == 404


def test_a_file_the_parser_cannot_take_is_422_with_the_reason(endpoint: Endpoint, tmp_path: Path) -> None:
    status, body = endpoint.post("/upload/siemens", b"not,a,trend,report\r\n", filename="junk.csv")
    assert status == 422 and body["error"]
    assert (tmp_path / "rejected/siemens/junk.csv.error.txt").exists()



@pytest.mark.parametrize("token", ["", "   ", "short-token"])
def test_an_empty_or_short_token_is_refused_in_one_line_without_echoing_it(tmp_path: Path, token: str) -> None:
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
