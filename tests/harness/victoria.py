"""Fixtures: a real VictoriaMetrics single-node server and a real vmauth in front of it (Debian's
``victoria-metrics`` package ships both binaries), on free loopback ports, stopped by the test.

Flags that matter, as the ``central`` role sets them (ansible/roles/central/defaults/main.yml):

- ``-dedup.minScrapeInterval=1ms``: of the samples of one series within one millisecond only one is kept. A
  station replays a batch whose reply it never saw (timeout, dropped connection): the replay carries the same
  series and timestamps, so it collapses onto what was stored, at query time and in background merges alike
  (checked: the same two points written twice export once). No sensor reads one series twice within 1 ms, so
  nothing real is merged away. VictoriaMetrics keeps milliseconds: the agent's ns timestamps are truncated.
- ``-retentionPeriod=100y``: the tests write readings with their real timestamps; nothing is deleted under them.
- ``-search.latencyOffset=0s``: queries see points as soon as they are stored (default 30 s: the newest
  half-minute is hidden to wait for stragglers), so a bounded poll can compare counts at once.

vmauth 1.79 answers a known user's request by proxying it, a missing ``Authorization`` header with 401 and an
unknown or revoked credential with **400** ("cannot find the provided auth token"), which the agent's sink must
take as a refusal of the credential, not of the data (fieldstation.fleet.auth_refused). It re-reads its
``-auth.config`` on SIGHUP.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fieldstation.influxd import free_port

#: Deduplication window: replays of a batch (same series, same timestamp) keep one sample.
DEDUP_INTERVAL = "1ms"


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: apt-get install victoria-metrics")
    return path


def _get(url: str, timeout: float = 5.0, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class _Process:
    """A server process with a log file, started and stopped on the same ports."""

    name = ""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = self.root / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def args(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> _Process:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.args(), stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
            if self.ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} not ready within {timeout:g} s; see {self.log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class VictoriaMetrics(_Process):
    """``victoria-metrics`` with its data under ``root``; restartable on the same port and data."""

    name = "victoria-metrics"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = self.root / "data"

    def args(self) -> list[str]:
        return [
            _binary("victoria-metrics"),
            f"-storageDataPath={self.data}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-dedup.minScrapeInterval={DEDUP_INTERVAL}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-loggerLevel=WARN",
        ]

    def ready(self) -> bool:
        try:
            return _get(f"{self.url}/health", 1)[0] == 200
        except OSError:
            return False

    def flush(self) -> None:
        """Make what was written searchable now (it is otherwise after up to a second)."""
        _get(f"{self.url}/internal/force_flush")

    def export(self, match: str) -> list[dict[str, Any]]:
        """Every series matching ``match`` (a series selector) with its raw samples, via /api/v1/export."""
        self.flush()
        query = urllib.parse.urlencode({"match[]": match})
        status, body = _get(f"{self.url}/api/v1/export?{query}", 30)
        assert status == 200, f"export {match}: {status} {body[:300]!r}"
        return [json.loads(line) for line in body.decode().splitlines() if line.strip()]

    def samples(self, match: str) -> list[tuple[str, str, int]]:
        """(metric name, sensor, timestamp ms) of every stored sample matching ``match``, sorted."""
        return sorted(
            (str(s["metric"]["__name__"]), str(s["metric"].get("sensor", "")), int(t))
            for s in self.export(match)
            for t in s["timestamps"]
        )

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query (MetricsQL) through /api/v1/query at ``at`` (Unix seconds; now): the result vector."""
        self.flush()
        query = urllib.parse.urlencode({"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})})
        status, body = _get(f"{self.url}/api/v1/query?{query}", 30)
        assert status == 200, f"query {promql}: {status} {body[:300]!r}"
        return list(json.loads(body)["data"]["result"])


class VMAuth(_Process):
    """``vmauth`` proxying ``/write`` and ``/ping`` to ``backend`` with one user per ``users`` entry (name →
    password), as the central role configures it. ``tls``: HTTPS with a self-signed certificate for 127.0.0.1
    (``cert``), made here with openssl as the role makes one; clients trust it through ``SSL_CERT_FILE``."""

    name = "vmauth"

    def __init__(self, root: Path, backend: str, users: dict[str, str], *, tls: bool = False) -> None:
        super().__init__(root)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.backend = backend
        self.config = self.root / "auth.yml"
        self.users = dict(users)
        self.cert = self.root / "central.crt"
        self.key = self.root / "central.key"
        self.context: ssl.SSLContext | None = None
        if tls:
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", str(self.key), "-out", str(self.cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                 "-addext", "subjectAltName=IP:127.0.0.1"],
                check=True,
                capture_output=True,
            )  # fmt: skip
            self.context = ssl.create_default_context(cafile=str(self.cert))
        self._write_config()

    def _write_config(self) -> None:
        # JSON is YAML: no quoting rules to get wrong for passwords.
        routes = [{"src_paths": ["/write", "/ping"], "url_prefix": self.backend}]
        users = [{"username": u, "password": p, "url_map": routes} for u, p in self.users.items()]
        self.config.write_text(json.dumps({"users": users}, indent=2))
        self.config.chmod(0o600)

    def args(self) -> list[str]:
        tls = ["-tls", f"-tlsCertFile={self.cert}", f"-tlsKeyFile={self.key}"] if self.context else []
        return [
            _binary("vmauth"),
            f"-auth.config={self.config}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            *tls,
            "-loggerLevel=WARN",
        ]

    def ready(self) -> bool:
        try:
            return _get(f"{self.url}/health", 1, self.context)[0] == 200
        except OSError:
            return False

    def reload(self) -> None:
        """Write ``users`` to the config and, when running, have vmauth re-read it (SIGHUP)."""
        self._write_config()
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)

    def revoke(self, user: str) -> None:
        """Remove ``user``: vmauth refuses its credential from the reload on."""
        del self.users[user]
        self.reload()

    def accepts(self, user: str, password: str) -> int:
        """The status vmauth answers a write of nothing with this credential."""
        req = urllib.request.Request(f"{self.url}/write?db=probe", data=b"", method="POST")
        req.add_unredirected_header(
            "Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        )
        try:
            with urllib.request.urlopen(req, timeout=5, context=self.context) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """A fresh VictoriaMetrics single-node server on a free loopback port."""
    server = VictoriaMetrics(tmp_path / "victoria-metrics")
    server.start()
    try:
        yield server
    finally:
        server.stop()
