"""Sinks against a real InfluxDB: values, tags and timestamps arrive; refusals and outages are handled."""

from __future__ import annotations

import http.server
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fieldstation.influxd import LocalInfluxd, free_port
from fieldstation.reading import Reading
from fieldstation.settings import SinkSettings
from fieldstation.sink import InfluxWriter, SinkWorker, WriteError
from fieldstation.spool import Spool
from harness.influx import start_influxd

T = 1_700_000_000_000_000_000
Maker = Callable[[SinkSettings], tuple[SinkWorker, Spool]]


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Callable[[SinkSettings], tuple[SinkWorker, Spool]]]:
    made: list[tuple[SinkWorker, Spool]] = []

    def make(settings: SinkSettings) -> tuple[SinkWorker, Spool]:
        spool = Spool(tmp_path / "spool.db", sinks=[settings.name])
        made.append((SinkWorker(settings, spool), spool))
        return made[-1]

    yield make
    for w, spool in made:
        w.writer.close()
        spool.close()


def test_points_arrive_with_values_tags_and_ns_timestamps(influxd: LocalInfluxd, worker: Maker) -> None:
    w, spool = worker(SinkSettings(name="local", url=influxd.url))
    readings = [
        Reading("thermo", {"value": 21.25}, {"sensor": "t1", "unit": "°C"}, T + 1),
        Reading("meter", {"voltage": 230.5, "ok": True, "count": 7}, {"sensor": "m 1", "unit": "V"}, T + 2),
    ]
    spool.append([r.to_line() for r in readings])
    assert w.drain_once() == 2
    assert w.drain_once() == 0
    assert influxd.rows("SELECT * FROM thermo GROUP BY *", "fieldstation") == [
        {"sensor": "t1", "unit": "°C", "time": T + 1, "value": 21.25}
    ]
    assert influxd.rows("SELECT * FROM meter GROUP BY *", "fieldstation") == [
        {"sensor": "m 1", "unit": "V", "time": T + 2, "voltage": 230.5, "ok": True, "count": 7}
    ]


def test_a_caught_up_sink_woken_sends_new_points_without_waiting_out_its_flush_interval(
    influxd: LocalInfluxd, worker: Maker
) -> None:
    """What the agent does for a dropped file's points: spooled, then the sink woken. With the longest flush interval (60 s)
    they would otherwise stay in the spool for an hour."""
    w, spool = worker(SinkSettings(name="local", url=influxd.url, database="woken", flush_interval=60))
    influxd.query('CREATE DATABASE "woken"')
    w.start()

    def arrived(n: int) -> list[dict[str, object]]:
        deadline = time.monotonic() + 20
        rows: list[dict[str, object]] = []
        while len(rows) < n and time.monotonic() < deadline:
            time.sleep(0.05)
            rows = influxd.rows('SELECT "value" FROM "dropped"', "woken")
        return rows

    try:
        spool.append([Reading("dropped", {"value": 1.0}, {"sensor": "file"}, T).to_line()])
        w.wake()
        assert arrived(1) == [{"time": T, "value": 1.0}]  # sent: the sink is caught up, in its minute-long wait
        spool.append([Reading("dropped", {"value": 2.0}, {"sensor": "file"}, T + 1).to_line()])
        w.wake()
        assert arrived(2) == [{"time": T, "value": 1.0}, {"time": T + 1, "value": 2.0}]
    finally:
        w.stop()


def test_a_refused_batch_is_split_down_to_the_point_which_alone_is_dropped_and_counted(
    influxd: LocalInfluxd, worker: Maker, caplog: pytest.LogCaptureFixture
) -> None:
    w, spool = worker(SinkSettings(name="local", url=influxd.url))
    spool.append(["m,sensor=a value=1.0 1", "this is not line protocol", "m,sensor=a value=2.0 2"])
    with caplog.at_level(logging.ERROR, "fieldstation.sink"):
        assert w.drain_once() == 3
    assert w.state.rejected_batches >= 1
    assert (w.state.dropped_points, w.state.points_written) == (1, 2)
    assert spool.backlog("local").depth == 0
    assert [r["value"] for r in influxd.rows("SELECT * FROM m", "fieldstation")] == [1.0, 2.0]
    (line,) = [r.getMessage() for r in caplog.records]
    assert "sink local: dropped a point of this" in line and "400" in line and "unable to parse" in line


def test_an_unknown_database_is_retried_not_skipped(influxd: LocalInfluxd, worker: Maker) -> None:
    w, spool = worker(SinkSettings(name="local", url=influxd.url, database="nope"))
    spool.append(["m,sensor=a value=1.0 1"])
    with pytest.raises(WriteError, match="answered 404") as info:
        w.drain_once()
    assert not info.value.permanent
    assert spool.backlog("local").depth == 1


def test_a_dead_server_is_a_retryable_error(worker: Maker) -> None:
    w, spool = worker(SinkSettings(name="local", url=f"http://127.0.0.1:{free_port()}", timeout=1))
    spool.append(["m,sensor=a value=1.0 1"])
    with pytest.raises(WriteError, match="ConnectionRefusedError"):
        w.drain_once()
    assert spool.backlog("local").depth == 1


def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with (
            InfluxWriter(SinkSettings(name="x", url=url, timeout=0.5)) as writer,
            pytest.raises(WriteError, match=r"TimeoutError|timed out"),
        ):
            writer.write(b"m value=1.0 1")


def test_basic_auth_against_influxdb_with_auth_on(tmp_path: Path) -> None:
    server = start_influxd(tmp_path / "auth", auth=True, db=None)
    try:
        server.query("CREATE USER admin WITH PASSWORD 'adminpw' WITH ALL PRIVILEGES")
        server.query('CREATE DATABASE "fieldstation"', auth=("admin", "adminpw"))
        base = {"name": "local", "url": server.url, "username": "admin"}
        with (
            InfluxWriter(SinkSettings(**base, password="wrong")) as bad,  # type: ignore[arg-type]
            pytest.raises(WriteError, match="answered 401") as info,
        ):
            bad.write(b"m,sensor=a value=1.0 1")
        assert not info.value.permanent  # fix the password and the backlog goes through
        with InfluxWriter(SinkSettings(**base, password="adminpw")) as good:  # type: ignore[arg-type]
            good.write(b"m,sensor=a value=1.0 1")
        rows = server.query("SELECT count(value) FROM m", "fieldstation", auth=("admin", "adminpw"))
        assert rows[0]["series"][0]["values"][0][1] == 1
    finally:
        server.stop()


def test_marked_lines_go_to_their_retention_policy(influxd: LocalInfluxd) -> None:
    from fieldstation.reading import routed, with_policy

    influxd.query('CREATE RETENTION POLICY "files" ON "fieldstation" DURATION INF REPLICATION 1')
    old = 1_600_000_000_000_000_000  # 2020: a logger's export
    lines = ["m,sensor=a value=1 " + str(old), with_policy("m,sensor=b value=2 " + str(old + 1), "files"),
             with_policy("m,sensor=b value=3 " + str(old + 2), "files"), "m,sensor=a value=4 " + str(old + 3)]
    assert [(route, len(group)) for route, group in routed(lines)] == [
        ((None, None), 1), (("files", None), 2), ((None, None), 1),
    ]
    writer = InfluxWriter(SinkSettings(name="x", url=influxd.url, database="fieldstation"))
    with writer:
        for (rp, db), group in routed(lines):
            writer.write("\n".join(group).encode(), rp, db)
    in_files = influxd.rows('SELECT "value" FROM "files"."m"', "fieldstation")
    assert [r["value"] for r in in_files] == [2.0, 3.0]
    assert len(influxd.rows('SELECT "value" FROM "autogen"."m"', "fieldstation")) == 2


def test_a_route_can_name_another_database(influxd: LocalInfluxd) -> None:
    from fieldstation.reading import routed, with_policy

    influxd.query('CREATE DATABASE "client_acme"')
    lines = [with_policy("m,sensor=a value=1 1700000000000000000", None, "client_acme"), "m,sensor=b value=2 1700000000000000000"]
    with InfluxWriter(SinkSettings(name="x", url=influxd.url, database="fieldstation")) as writer:
        for (rp, db), group in routed(lines):
            writer.write("\n".join(group).encode(), rp, db)
    assert [r["sensor"] for r in influxd.rows('SELECT * FROM "m"', "client_acme")] == ["a"]
    assert [r["sensor"] for r in influxd.rows('SELECT * FROM "m"', "fieldstation")] == ["b"]


def drain_all(w: SinkWorker, within: float) -> int:
    """Drain until nothing is pending; the points dealt with. Bounded: fails if it takes longer than ``within``."""
    deadline = time.monotonic() + within
    total = 0
    while n := w.drain_once():
        total += n
        assert time.monotonic() < deadline, f"still draining after {within} s"
    return total


def test_a_26_mb_point_among_1000_good_ones_is_dropped_alone_and_the_rest_delivered(
    influxd: LocalInfluxd, worker: Maker, caplog: pytest.LogCaptureFixture
) -> None:
    # 26 MB: over InfluxDB's default max-body-size (25 MB), which it answers by closing the connection.
    w, spool = worker(SinkSettings(name="local", url=influxd.url))
    good = [f"m,sensor=s{i % 7} value={i} {T + i}" for i in range(1000)]
    huge = f'm,sensor=huge text="{"x" * 26_000_000}" {T + 500}'
    spool.append([*good[:500], huge, *good[500:]])
    with caplog.at_level(logging.ERROR, "fieldstation.sink"):
        assert drain_all(w, 120) == 1001
    assert w.state.dropped_points == 1 and w.state.points_written == 1000
    assert spool.backlog("local").depth == 0
    rows = influxd.rows("SELECT value FROM m", "fieldstation")
    assert [(r["time"], r["value"]) for r in rows] == [(T + i, float(i)) for i in range(1000)]
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"sink local: dropped a point of m (sensor huge) ({len(huge)} bytes)") and len(line) < 600


def test_a_point_with_an_empty_field_name_spooled_raw_is_dropped_and_the_rest_delivered(
    influxd: LocalInfluxd, worker: Maker
) -> None:
    w, spool = worker(SinkSettings(name="local", url=influxd.url, batch_size=100))
    good = [f"m,sensor=a value={i} {T + i}" for i in range(250)]
    spool.append([*good[:120], f"m,sensor=empty =1.0 {T + 120}", *good[120:]])  # what {"": 1.0} encodes to
    assert drain_all(w, 60) == 251
    assert w.state.dropped_points == 1
    assert spool.cursor("local") == spool.append([]) and spool.backlog("local").depth == 0
    assert [r["value"] for r in influxd.rows("SELECT value FROM m", "fieldstation")] == [float(i) for i in range(250)]


class Hostile(http.server.BaseHTTPRequestHandler):
    """Answers 413 (garbage) for a body over 2000 bytes, 400 (garbage) for one holding "bad", else 204."""

    received: list[bytes]

    def do_POST(self) -> None:  # http.server's names
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = 413 if len(body) > 2000 else 400 if b"bad" in body else 204
        if status == 204:
            self.received.extend(body.split(b"\n"))
        self.send_response(status)
        junk = b"" if status == 204 else b"\x00\xff<html>nope</html>\x1b[2J"
        self.send_header("Content-Length", str(len(junk)))
        self.end_headers()
        self.wfile.write(junk)

    def do_GET(self) -> None:
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def hostile_server() -> Iterator[tuple[str, list[bytes]]]:
    received: list[bytes] = []
    handler = type("Handler", (Hostile,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_a_hostile_server_refusing_points_gets_them_split_dropped_and_logged_once_each(
    worker: Maker, caplog: pytest.LogCaptureFixture
) -> None:
    with hostile_server() as (url, received):
        w, spool = worker(SinkSettings(name="hostile", url=url, flush_interval=0.1))
        lines = [f"m,sensor={'bad' if i in (3, 77) else 'ok'}{i} value={i} {T + i}" for i in range(200)]
        lines[150] = f'm,sensor=long text="{"x" * 3000}" {T + 150}'  # 413 even alone
        spool.append(lines)
        with caplog.at_level(logging.INFO, "fieldstation.sink"):
            w.start()
            deadline = time.monotonic() + 60
            while spool.backlog("hostile").depth and time.monotonic() < deadline:
                time.sleep(0.1)
            w.stop()
    assert spool.backlog("hostile").depth == 0
    assert received == [line.encode() for i, line in enumerate(lines) if i not in (3, 77, 150)]  # in order, once
    assert w.state.dropped_points == 3 and w.state.rejected_batches >= 3 and w.state.write_failures == 0
    dropped = [r.getMessage() for r in caplog.records if "dropped a point" in r.getMessage()]
    assert [m.split(" (")[0] for m in dropped] == ["sink hostile: dropped a point of m"] * 3
    assert ["(sensor bad3)" in dropped[0], "(sensor bad77)" in dropped[1], "(sensor long)" in dropped[2]] == [True] * 3
    assert ["400: " in dropped[0], "400: " in dropped[1], "413: " in dropped[2]] == [True] * 3
    assert all(r.exc_info is None for r in caplog.records) and len(caplog.records) == 3


def test_a_probe_answering_again_cuts_the_backoff_short(influxd: LocalInfluxd, worker: Maker) -> None:
    w, _ = worker(SinkSettings(name="local", url=influxd.url))
    influxd.stop()
    threading.Timer(2.0, influxd.start).start()
    assert w._wait_or_probe(60, server_down=True)  # a 60 s backoff, cut short by /ping
    assert w.state.probe_recoveries == 1  # True comes only from /ping answering, never from the wait running out
    assert influxd.ping()


def test_a_server_that_answers_ping_while_writes_fail_waits_out_the_backoff(worker: Maker) -> None:
    with hostile_server() as (url, _):
        w, _spool = worker(SinkSettings(name="hostile", url=url))
        assert not w._wait_or_probe(1.5, server_down=False)
    assert w.state.probe_recoveries == 0
