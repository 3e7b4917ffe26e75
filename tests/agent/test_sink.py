"""Sinks against a real InfluxDB: values, tags and timestamps arrive; refusals and outages are handled."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
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


def test_a_batch_the_server_refuses_is_skipped_and_counted(influxd: LocalInfluxd, worker: Maker) -> None:
    w, spool = worker(SinkSettings(name="local", url=influxd.url))
    spool.append(["m,sensor=a value=1.0 1", "this is not line protocol", "m,sensor=a value=2.0 2"])
    assert w.drain_once() == 3
    assert w.state.rejected_batches == 1
    assert spool.backlog("local").depth == 0
    # InfluxDB 1.x keeps the parsable points of a partially refused batch.
    assert [r["value"] for r in influxd.rows("SELECT * FROM m", "fieldstation")] == [1.0, 2.0]


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
