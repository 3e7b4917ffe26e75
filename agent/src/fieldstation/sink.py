"""Sinks: deliver readings to any server that speaks InfluxDB's ``/write``.

Two paths, one server reply handling. While a sink is caught up, the agent hands it each commit window
directly (:meth:`SinkWorker.deliver`, on a connection of its own): what it confirms needs no spool write.
Whatever it did not confirm is spooled, and the sink's own thread drains it past its own cursor, so a dead
central server never slows the local database. A batch is confirmed only on a 2xx reply. Replays are
idempotent because a point is identified by its series and timestamp: sending it twice overwrites it.
"""

from __future__ import annotations

import base64
import http.client
import logging
import threading
import time
import urllib.parse
from dataclasses import dataclass

from fieldstation.reading import routed
from fieldstation.settings import SinkSettings
from fieldstation.spool import Spool

log = logging.getLogger("fieldstation.sink")

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
#: Seconds a direct delivery may take before the window is spooled instead (it holds up the commit tick).
DIRECT_TIMEOUT = 5.0


class WriteError(Exception):
    """A write that did not succeed. ``permanent``: the data itself was refused, retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool = False, too_large: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.too_large = too_large


class InfluxWriter:
    """POSTs line protocol to ``/write`` over one kept-alive HTTP connection."""

    def __init__(self, settings: SinkSettings) -> None:
        self.settings = settings
        url = urllib.parse.urlsplit(settings.url)
        self._https = url.scheme == "https"
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or (443 if self._https else 80)
        self._base = url.path
        self._path = self._path_for(settings.retention_policy)
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if settings.token is not None:
            self._headers["Authorization"] = f"Token {settings.token.get_secret_value()}"
        elif settings.username is not None:
            secret = settings.password.get_secret_value() if settings.password else ""
            basic = base64.b64encode(f"{settings.username}:{secret}".encode()).decode()
            self._headers["Authorization"] = f"Basic {basic}"
        self._conn: http.client.HTTPConnection | None = None

    def _path_for(self, retention_policy: str | None, database: str | None = None) -> str:
        params = {"db": database or self.settings.database, "precision": "ns"}
        if retention_policy:
            params["rp"] = retention_policy
        return f"{self._base}/write?{urllib.parse.urlencode(params)}"

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.settings.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> InfluxWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, body: bytes, retention_policy: str | None = None, database: str | None = None) -> None:
        """POST ``body``; ``retention_policy`` and ``database`` override the sink's own for this request."""
        routed_elsewhere = retention_policy is not None or database is not None
        path = (
            self._path_for(retention_policy or self.settings.retention_policy, database)
            if routed_elsewhere
            else self._path
        )
        try:
            conn = self._connection()
            conn.request("POST", path, body=body, headers=self._headers)
            resp = conn.getresponse()
            text = resp.read(2048).decode("utf-8", "replace").strip()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise WriteError(f"{self.settings.url}: {type(exc).__name__}: {exc}") from None
        if 200 <= resp.status < 300:
            return
        self.close()
        msg = f"{self.settings.url} answered {resp.status}: {text[:300]}"
        raise WriteError(msg, permanent=resp.status == 400, too_large=resp.status == 413)


@dataclass
class SinkState:
    name: str
    points_written: int = 0
    batches: int = 0
    write_failures: int = 0
    rejected_batches: int = 0
    last_error: str | None = None
    last_success: float | None = None  # wall clock seconds


class SinkWorker:
    """One sink's thread: fetch a batch past its cursor, POST it, advance the cursor, repeat."""

    def __init__(self, settings: SinkSettings, spool: Spool) -> None:
        self.settings = settings
        self.spool = spool
        self.writer = InfluxWriter(settings)
        self.direct = InfluxWriter(settings.model_copy(update={"timeout": min(settings.timeout, DIRECT_TIMEOUT)}))
        self.state = SinkState(settings.name)
        self._stop = threading.Event()
        self._batch = settings.batch_size
        self._direct_backoff = BACKOFF_START
        self._direct_retry_at = 0.0
        self._error_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"sink:{settings.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self.writer.close()
        self.direct.close()

    def _send(self, writer: InfluxWriter, lines: list[str]) -> None:
        """POST one batch; a refused batch (400) is counted and skipped, anything else retryable raises."""
        try:
            for (rp, db), group in routed(lines):
                # A sink with its own retention policy and database (a central server's) takes everything there;
                # the local InfluxDB follows the lines' routes (dropped files to `files`, a client's to its own).
                central = self.settings.retention_policy is not None
                writer.write("\n".join(group).encode(), None if central else rp, None if central else db)
        except WriteError as exc:
            if exc.too_large and self._batch > 1:
                self._batch = max(1, self._batch // 2)
            if not exc.permanent:
                raise
            # The server refused the data itself (400): skip it, or the sink is stuck forever.
            self.state.rejected_batches += 1
            log.error("sink %s: batch of %d points refused, skipped: %s", self.state.name, len(lines), exc)
        self.state.points_written += len(lines)
        self.state.batches += 1
        self.state.last_success = time.time()

    def deliver(self, lines: list[str]) -> bool:
        """Send a commit window straight to the server; True when it confirmed all of it (never raises).

        Called only while the sink is caught up; on False the window is spooled and this sink's thread sends it.
        """
        if time.monotonic() < self._direct_retry_at:
            return False  # failed a moment ago (while the spool cannot take the window either): not every tick
        try:
            for start in range(0, len(lines), self._batch):
                self._send(self.direct, lines[start : start + self._batch])
        except WriteError as exc:
            self.state.write_failures += 1
            if str(exc) != self.state.last_error:
                log.warning("sink %s: write failed, spooling for retry: %s", self.state.name, exc)
            self.state.last_error = str(exc)
            self._direct_retry_at = time.monotonic() + self._direct_backoff
            self._direct_backoff = min(BACKOFF_MAX, self._direct_backoff * 2)
            return False
        self._direct_backoff = BACKOFF_START
        self._writing_again()
        return True

    def _writing_again(self) -> None:
        with self._error_lock:
            if self.state.last_error is not None:
                log.info("sink %s: writing again", self.state.name)
                self.state.last_error = None

    def drain_once(self) -> int:
        """Send one batch from the spool. Returns points confirmed (0 when nothing is pending); raises WriteError."""
        rows = self.spool.fetch(self.settings.name, self._batch)
        if not rows:
            return 0
        self._send(self.writer, [line for _, line in rows])
        self.spool.advance(self.settings.name, rows[-1][0])
        return len(rows)

    def _run(self) -> None:
        backoff = BACKOFF_START
        while not self._stop.is_set():
            try:
                sent = self.drain_once()
            except WriteError as exc:
                self.state.write_failures += 1
                if str(exc) != self.state.last_error:
                    log.warning("sink %s: write failed, will retry: %s", self.state.name, exc)
                self.state.last_error = str(exc)
                self._stop.wait(backoff)
                backoff = min(BACKOFF_MAX, backoff * 2)
                continue
            except Exception as exc:  # a spool error: keep the thread alive, report once
                self.state.write_failures += 1
                log.exception("sink %s: unexpected error", self.state.name)
                self.state.last_error = f"{type(exc).__name__}: {exc}"
                self._stop.wait(BACKOFF_MAX)
                continue
            if sent:
                self._writing_again()
            backoff = BACKOFF_START
            if sent < self._batch:
                # Caught up: gather a flush interval's worth before the next POST (a full batch goes at once).
                self._stop.wait(self.settings.flush_interval)
