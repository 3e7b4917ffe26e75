"""Sinks: deliver readings to any server that speaks InfluxDB's ``/write``.

Two paths, one server reply handling. While a sink is caught up, the agent hands it each commit window
directly (:meth:`SinkWorker.deliver`, on a connection of its own): what it confirms needs no spool write.
Whatever it did not confirm is spooled, and the sink's own thread drains it past its own cursor, so a dead
central server never slows the local database. A batch is confirmed only on a 2xx reply. Replays are
idempotent because a point is identified by its series and timestamp: sending it twice overwrites it.

A batch the server refuses for its data (400, 413, any 4xx but the ones below) is halved until the point it
refuses is alone; that point is dropped, counted and logged once, everything else is delivered in order. A
sink that cannot reach its server probes ``/ping`` about every second during its backoff and retries as soon
as the server answers again. See docs/decisions/0001-store-and-forward.md, *Server replies*.
"""

from __future__ import annotations

import base64
import http.client
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

from fieldstation.fleet import auth_refused, tagger
from fieldstation.reading import Route, routed
from fieldstation.settings import SinkSettings
from fieldstation.spool import Spool

log = logging.getLogger("fieldstation.sink")

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
#: Seconds a direct delivery may take before the window is spooled instead (it holds up the commit tick).
DIRECT_TIMEOUT = 5.0
#: Bytes per POST: a batch is cut before it grows past this (InfluxDB 1.x refuses bodies over its max-body-size,
#: 25 MB by default, by closing the connection); a point bigger than this is sent alone.
MAX_BODY = 10_000_000
#: The least a server's refusals of large bodies (413) can shrink that limit to.
MIN_BODY = 64_000
#: A connection dropped while sending a body at least this big is taken as the server refusing its size.
SUSPECT_BODY = 1_000_000
#: Seconds between ``/ping`` probes while waiting out a backoff, and the most a probe may take.
PROBE_INTERVAL = 1.0
#: Replies that say nothing against the data itself: retried with backoff (auth, no such database, throttling).
RETRY_STATUSES = frozenset({401, 403, 404, 408, 429})


class WriteError(Exception):
    """A write that did not succeed.

    ``permanent``: the server refused the data itself (retrying the same body cannot help, a part of it may pass).
    ``too_large``: it refused the body's size (413, or the connection dropped while sending a big body:
    ``dropped_connection``). ``unreachable``: no HTTP reply at all. ``done``: how many leading points of what was
    being sent were dealt with (confirmed or dropped) before the error.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        too_large: bool = False,
        dropped_connection: bool = False,
        unreachable: bool = False,
        reason: str = "",
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.too_large = too_large
        self.dropped_connection = dropped_connection
        self.unreachable = unreachable
        self.reason = reason or message
        self.done = 0


def classify(status: int) -> tuple[bool, bool]:
    """(permanent, too_large) for a non-2xx HTTP status: what a refusal says about the data sent."""
    if status == 413:
        return False, True
    if 400 <= status < 500 and status not in RETRY_STATUSES:
        return True, False
    return False, False  # 5xx, 401/403/404/408/429, anything unexpected: the server's state, not the data


_SERIES = re.compile(r"(?:[^\\ ]|\\.)*")
_PART = re.compile(r"(?:[^\\,]|\\.)+")


def point_name(line: str) -> str:
    """``measurement (sensor x)`` of a line-protocol point, for log lines; bounded whatever the line."""
    match = _SERIES.match(line[:2000])
    parts = _PART.findall(match.group() if match else "")
    measurement = parts[0][:100] if parts else "?"
    sensor = next((p[7:][:100] for p in parts[1:] if p.startswith("sensor=")), None)
    return f"{measurement} (sensor {sensor})" if sensor is not None else measurement


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
        self._answered = False  # the kept-alive connection has answered before (it may since have been closed)

    def _path_for(self, retention_policy: str | None, database: str | None = None) -> str:
        params = {"db": database or self.settings.database, "precision": "ns"}
        if retention_policy:
            params["rp"] = retention_policy
        return f"{self._base}/write?{urllib.parse.urlencode(params)}"

    def _new_connection(self, timeout: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=timeout)

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = self._new_connection(self.settings.timeout)
            self._answered = False
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> InfluxWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self) -> bool:
        """GET ``/ping`` on a connection of its own: True when the server answers 2xx (InfluxDB 1.x and 2/3 and
        VictoriaMetrics answer 204). Never raises; takes at most ``PROBE_INTERVAL``."""
        conn = self._new_connection(min(self.settings.timeout, PROBE_INTERVAL))
        try:
            conn.request("GET", f"{self._base}/ping")
            resp = conn.getresponse()
            resp.read(2048)
            return 200 <= resp.status < 300
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def write(self, body: bytes, retention_policy: str | None = None, database: str | None = None) -> None:
        """POST ``body``; ``retention_policy`` and ``database`` override the sink's own for this request."""
        routed_elsewhere = retention_policy is not None or database is not None
        path = (
            self._path_for(retention_policy or self.settings.retention_policy, database)
            if routed_elsewhere
            else self._path
        )
        while True:
            reused = self._conn is not None and self._answered
            try:
                conn = self._connection()
                conn.request("POST", path, body=body, headers=self._headers)
                resp = conn.getresponse()
                text = resp.read(2048).decode("utf-8", "replace").strip()
                self._answered = True
                break
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if reused and isinstance(exc, ConnectionError):
                    continue  # the server closed the kept-alive connection while it was idle: once more, afresh
                msg = f"{self.settings.url}: {type(exc).__name__}: {exc}"
                if len(body) >= SUSPECT_BODY and isinstance(exc, ConnectionError):
                    reason = f"the server closed the connection while receiving {len(body)} bytes ({exc})"
                    raise WriteError(msg, too_large=True, dropped_connection=True, reason=reason) from None
                raise WriteError(msg, unreachable=True) from None
        if 200 <= resp.status < 300:
            return
        self.close()
        msg = f"{self.settings.url} answered {resp.status}: {text[:300]}"
        permanent, too_large = (False, False) if auth_refused(resp.status, text) else classify(resp.status)
        raise WriteError(msg, permanent=permanent, too_large=too_large, reason=f"{resp.status}: {text[:300]}")


@dataclass
class SinkState:
    name: str
    points_written: int = 0
    batches: int = 0
    write_failures: int = 0
    rejected_batches: int = 0  # requests the server refused for their data (each then split)
    dropped_points: int = 0  # single points it refused: dropped, never retried
    probe_recoveries: int = 0  # backoffs cut short because /ping answered again
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
        self._tag = tagger(settings.tags)  # a central sink's station tag, added as each line leaves
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by wake(): new points in the spool, do not wait out the flush interval
        self._batch = settings.batch_size
        self._max_body = MAX_BODY
        self._direct_backoff = BACKOFF_START
        self._direct_retry_at = 0.0
        self._error_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"sink:{settings.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """New points were spooled that no window delivers (a dropped file's): send them now, not after the
        caught-up sink's flush interval."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self.writer.close()
        self.direct.close()

    def _chunks(self, lines: list[str]) -> Iterator[list[str]]:
        """Consecutive runs of at most ``batch_size`` points and ``_max_body`` bytes; a bigger point alone."""
        if len(lines) <= self._batch and sum(map(len, lines)) + len(lines) <= self._max_body:
            yield lines  # the usual case, without a loop in Python over every line
            return
        chunk: list[str] = []
        size = 0
        for line in lines:
            n = len(line) + 1  # characters, not bytes: a bound good enough to cut by, without encoding twice
            if chunk and (len(chunk) >= self._batch or size + n > self._max_body):
                yield chunk
                chunk, size = [], 0
            chunk.append(line)
            size += n
        if chunk:
            yield chunk

    def _send(self, writer: InfluxWriter, lines: list[str], *, split: bool) -> None:
        """Deliver ``lines`` in order. ``split``: a refused batch is halved down to the point, which is dropped;
        else a refusal raises too. Raises WriteError for what can be retried, its ``done`` counting the leading
        points dealt with."""
        done = 0
        # A sink with its own retention policy and database (a central server's) takes everything there;
        # the local InfluxDB follows the lines' routes (dropped files to `files`, a client's to its own).
        central = self.settings.retention_policy is not None
        try:
            for (rp, db), group in routed(lines):
                route = (None, None) if central else (rp, db)
                tagged = group if self._tag is None else self._tag(group)
                for chunk in self._chunks(tagged):
                    self._post(writer, chunk, route, split=split)
                    done += len(chunk)
        except WriteError as exc:
            exc.done += done
            raise

    def _post(self, writer: InfluxWriter, lines: list[str], route: Route, *, split: bool) -> None:
        body = "\n".join(lines).encode()
        try:
            writer.write(body, *route)
        except WriteError as exc:
            if not (split and (exc.permanent or exc.too_large)):
                raise
            if len(lines) > 1:
                self.state.rejected_batches += 1
                if exc.too_large:
                    # The server's limit is below ours: cut batches smaller from now on (down to MIN_BODY).
                    self._max_body = max(MIN_BODY, min(self._max_body, len(body) // 2))
                half = len(lines) // 2
                self._post(writer, lines[:half], route, split=split)
                try:
                    self._post(writer, lines[half:], route, split=split)
                except WriteError as inner:
                    inner.done += half
                    raise
                return
            if exc.dropped_connection and not writer.ping():
                raise  # the server itself went away while this point was on its way: retry, drop nothing
            self.state.dropped_points += 1
            log.error(
                "sink %s: dropped a point of %s (%d bytes) the server refuses: %s",
                self.state.name,
                point_name(lines[0]),
                len(body),
                exc.reason[:300],
            )
            return
        self.state.points_written += len(lines)
        self.state.batches += 1
        self.state.last_success = time.time()

    def deliver(self, lines: list[str]) -> bool:
        """Send a commit window straight to the server; True when it confirmed all of it (never raises).

        Called only while the sink is caught up; on False the window is spooled and this sink's thread sends it
        (and splits it, should the server refuse a part: that takes more requests than a commit tick can wait).
        """
        if time.monotonic() < self._direct_retry_at:
            return False  # failed a moment ago (while the spool cannot take the window either): not every tick
        try:
            self._send(self.direct, lines, split=False)
        except WriteError as exc:
            if exc.permanent or exc.too_large:
                return False  # the server is up: no backoff, the thread splits the window from the spool
            self.state.write_failures += 1
            if str(exc) != self.state.last_error:
                log.warning("sink %s: write failed, spooling for retry: %s", self.state.name, exc)
            self.state.last_error = str(exc)
            self._direct_retry_at = time.monotonic() + self._direct_backoff
            self._direct_backoff = min(BACKOFF_MAX, self._direct_backoff * 2)
            return False
        self._writing_again()
        return True

    def _writing_again(self) -> None:
        # Either path confirming a write means the server is back: direct delivery may resume at once.
        self._direct_backoff = BACKOFF_START
        self._direct_retry_at = 0.0
        with self._error_lock:
            if self.state.last_error is not None:
                log.info("sink %s: writing again", self.state.name)
                self.state.last_error = None

    def drain_once(self) -> int:
        """Send one batch from the spool. Returns points dealt with: confirmed, or dropped as refused (0 when
        nothing is pending); raises WriteError, having moved the cursor past what was dealt with."""
        rows = self.spool.fetch(self.settings.name, self._batch)
        if not rows:
            return 0
        try:
            self._send(self.writer, [line for _, line in rows], split=True)
        except WriteError as exc:
            if exc.done:
                self.spool.advance(self.settings.name, rows[exc.done - 1][0])
            raise
        self.spool.advance(self.settings.name, rows[-1][0])
        return len(rows)

    def _wait_or_probe(self, backoff: float, server_down: bool) -> bool:
        """Wait out ``backoff``, probing ``/ping`` every second; True (at once) when a server that was down
        answers again. ``server_down``: the failure had no HTTP reply. A server that answers /ping while its
        writes fail (5xx, auth) is left alone for the whole backoff."""
        deadline = time.monotonic() + backoff
        while not self._stop.wait(min(PROBE_INTERVAL, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                return False
            if self.writer.ping():
                if server_down:
                    self.state.probe_recoveries += 1
                    log.info(
                        "sink %s: %s answers /ping again: retrying now, not in %.0f s",
                        self.state.name,
                        self.settings.url,
                        deadline - time.monotonic(),
                    )
                    return True
                self._stop.wait(max(0.0, deadline - time.monotonic()))
                return False
            server_down = True
        return False

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
                if self._wait_or_probe(backoff, exc.unreachable or exc.dropped_connection):
                    backoff = BACKOFF_START  # back: should it fail again, the backoff starts over
                else:
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
                # Caught up: gather a flush interval's worth before the next POST (a full batch goes at once), unless
                # woken by points spooled past every window (a dropped file) or by stop().
                self._wake.wait(self.settings.flush_interval)
                self._wake.clear()
