"""The whole agent against real InfluxDB servers: nothing acknowledged is lost, nothing is doubled."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from fieldstation.agent import Agent
from fieldstation.influxd import LocalInfluxd, free_port
from fieldstation.reading import Reading
from fieldstation.sensors.simulated import Simulated
from fieldstation.settings import SinkSettings, SpoolSettings
from fieldstation.sink import BACKOFF_MAX
from fieldstation.spool import Spool
from harness.agent import (
    fieldstation_cmd,
    key_of_line,
    running_agent,
    settings_for,
    start_agent_process,
    stored,
    wait_for,
)
from harness.blockdev import fill, loop_ext4, needs_root

pytestmark = pytest.mark.slow


def caught_up(agent: Agent, sink: str) -> bool:
    """Nothing older than a few seconds waits for this sink (new readings keep arriving meanwhile)."""
    return agent.spool.backlog(sink).oldest_age_s < 3


def sensors(interval: float = 0.2) -> list[Simulated]:
    return [
        Simulated(name="sine", signal="sine", unit="K", interval=interval, precision=3),
        Simulated(name="ramp", signal="ramp", unit="V", interval=interval * 2),
        Simulated(
            name="multi", fields=["a", "b"], unit={"a": "A", "b": "W"}, value={"a": 1.0, "b": 2.0}, interval=interval
        ),
    ]


def test_readings_arrive_with_their_values_tags_and_timestamps(influxd: LocalInfluxd, tmp_path: Path) -> None:
    with running_agent(settings_for(tmp_path, {"local": influxd.url}), sensors()) as (_, emitted):
        wait_for(lambda: len(emitted) >= 20, 20, "20 readings")
    expected = {}
    for r in emitted:
        for field, value in r.fields.items():
            expected[(r.tags["sensor"], r.tags["unit"], r.time_ns, field)] = value
    got = {}
    for row in influxd.rows('SELECT * FROM "simulated" GROUP BY *', "fieldstation"):
        for field in ("value", "a", "b"):
            if row.get(field) is not None:
                got[(row["sensor"], row["unit"], row["time"], field)] = row[field]
    assert got == expected
    health = influxd.rows('SELECT * FROM "fieldstation_sensor" WHERE "unit" = \'count\' GROUP BY *', "fieldstation")
    assert {row["sensor"] for row in health} == {"sine", "ramp", "multi"}
    assert all(row["errors"] == 0 and row["stale"] is False for row in health)
    spool = influxd.rows('SELECT last("depth") FROM "fieldstation_spool" GROUP BY "sink"', "fieldstation")
    assert [row["sink"] for row in spool] == ["local"]
    sink = influxd.rows('SELECT last("write_failures") FROM "fieldstation_sink"', "fieldstation")
    assert sink[0]["last"] == 0


def test_an_influxdb_outage_of_30_s_loses_nothing_and_doubles_nothing(influxd: LocalInfluxd, tmp_path: Path) -> None:
    with running_agent(settings_for(tmp_path, {"local": influxd.url}), sensors()) as (agent, emitted):
        wait_for(lambda: len(stored(influxd)) >= 10, 20, "first points stored")
        influxd.stop()
        time.sleep(30)
        during = len(emitted)
        assert agent.spool.backlog("local").depth > 0
        influxd.start()
        wait_for(lambda: caught_up(agent, "local"), 60, "the backlog to drain")
        assert agent.sinks[0].state.write_failures > 0
    keys = sorted((r.tags["sensor"], r.time_ns) for r in emitted)
    assert len(keys) > during > 100
    assert stored(influxd) == keys  # every reading exactly once


def test_two_sinks_one_down_the_other_keeps_up_then_both_agree(
    influxd: LocalInfluxd, influxd2: LocalInfluxd, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, {"local": influxd.url, "central": influxd2.url})
    with running_agent(settings, sensors()) as (agent, emitted):
        wait_for(lambda: len(stored(influxd2)) >= 5, 20, "central receiving")
        influxd2.stop()
        outage_start = time.time_ns()
        # While central is down, local stays current: readings taken during the outage show up promptly.
        for _ in range(3):
            mark = time.time_ns()
            wait_for(lambda m=mark: any(t > m for _, t in stored(influxd)), 5, "local to keep receiving")
            time.sleep(1)
        assert agent.spool.backlog("central").depth > 0
        influxd2.start()
        wait_for(lambda: caught_up(agent, "central"), 60, "central to catch up")
    keys = sorted((r.tags["sensor"], r.time_ns) for r in emitted)
    assert stored(influxd) == keys
    assert stored(influxd2) == keys
    assert any(t > outage_start for _, t in stored(influxd2))


def test_with_every_sink_up_nothing_touches_the_spool(
    influxd: LocalInfluxd, influxd2: LocalInfluxd, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, {"local": influxd.url, "central": influxd2.url}, health_interval=1)
    with running_agent(settings, sensors(0.1)) as (agent, emitted):
        wait_for(lambda: len(stored(influxd)) >= 50 and len(stored(influxd2)) >= 50, 30, "both sinks receiving")
        wal = tmp_path / "spool.db-wal"
        size = wal.stat().st_size if wal.exists() else 0
        time.sleep(3)  # several commit ticks and health readings
        assert (wal.stat().st_size if wal.exists() else 0) == size
        assert agent.acknowledged > 100
    keys = sorted((r.tags["sensor"], r.time_ns) for r in emitted)
    assert stored(influxd) == keys and stored(influxd2) == keys
    with contextlib.closing(sqlite3.connect(tmp_path / "spool.db")) as db:
        assert db.execute("SELECT count(*) FROM sqlite_sequence").fetchone() == (0,)  # no point ever spooled
    written = influxd.rows('SELECT last("bytes_written_per_day") FROM "fieldstation_agent"', "fieldstation")
    assert written and written[0]["last"] >= 0


def spooled_lines(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [line for (line,) in db.execute("SELECT line FROM points ORDER BY id")]


def test_sigkill_then_restart_loses_no_acknowledged_reading_and_doubles_none(
    influxd: LocalInfluxd, tmp_path: Path
) -> None:
    # A second sink that never answers keeps every acknowledged point in the spool, so the spool itself
    # is the record of what was acknowledged.
    (tmp_path / "config.py").write_text(
        "from fieldstation.sensors.simulated import Simulated\n"
        "sensors = [Simulated(name=f's{i}', interval=0.1, unit='K') for i in range(5)]\n"
    )
    (tmp_path / "agent.toml").write_text(
        f'config = "{tmp_path / "config.py"}"\n'
        f'state_file = "{tmp_path / "state.json"}"\n'
        f'[spool]\npath = "{tmp_path / "spool.db"}"\n'
        f'[[sinks]]\nname = "local"\nurl = "{influxd.url}"\n'
        f'[[sinks]]\nname = "never"\nurl = "http://127.0.0.1:{free_port()}"\ntimeout = 1\n'
    )
    log = tmp_path / "agent.log"
    first = start_agent_process(tmp_path / "agent.toml", log)
    wait_for(lambda: len(stored(influxd)) >= 50, 30, "the first run to store points")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    acknowledged_before_kill = spooled_lines(tmp_path / "spool.db")
    assert acknowledged_before_kill

    # The restart runs under a notify socket, as systemd would start it.
    notify = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify))
        sock.settimeout(30)
        second = start_agent_process(
            tmp_path / "agent.toml", log, env={"NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "1000000"}
        )
        messages = []
        while "WATCHDOG=1" not in messages:
            messages.append(sock.recv(64).decode())
        assert "READY=1" in messages
        n = len(acknowledged_before_kill)
        wait_for(lambda: len(spooled_lines(tmp_path / "spool.db")) >= n + 50, 30, "the second run to spool points")
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, log.read_text()
        sock.settimeout(5)
        while "STOPPING=1" not in messages:
            messages.append(sock.recv(64).decode())

    acknowledged = spooled_lines(tmp_path / "spool.db")
    assert acknowledged[: len(acknowledged_before_kill)] == acknowledged_before_kill
    keys = sorted((s, t) for m, s, t in map(key_of_line, acknowledged) if m == "simulated")
    assert len(set(keys)) == len(keys)  # none spooled twice
    in_local = stored(influxd)
    assert set(keys) <= set(in_local)
    # "local" may also hold readings of the window the kill interrupted: delivered to it, never acknowledged
    # (the other sink had not confirmed them and they were not committed yet). Only that window.
    last_before_kill = max(t for m, _, t in map(key_of_line, acknowledged_before_kill) if m == "simulated")
    unacknowledged = set(in_local) - set(keys)
    assert all(last_before_kill < t <= last_before_kill + 2 * 10**9 for _, t in unacknowledged)
    assert "Traceback" not in log.read_text()


def test_sigterm_flushes_every_reading_and_exits_0(influxd: LocalInfluxd, tmp_path: Path) -> None:
    (tmp_path / "config.py").write_text(
        "from fieldstation.sensors.simulated import Simulated\nsensors = [Simulated(name='t', interval=0.1)]\n"
    )
    (tmp_path / "agent.toml").write_text(
        f'config = "{tmp_path / "config.py"}"\nstate_file = "{tmp_path / "state.json"}"\n'
        f'[spool]\npath = "{tmp_path / "spool.db"}"\ncommit_interval = 5\n'
        f'[[sinks]]\nname = "local"\nurl = "{influxd.url}"\n'
    )
    started = time.time()
    proc = start_agent_process(tmp_path / "agent.toml", tmp_path / "agent.log")
    wait_for((tmp_path / "state.json").exists, 20, "the state file")
    time.sleep(2)  # readings pile up in memory: the commit interval is 5 s
    listing = subprocess.run(
        fieldstation_cmd("sensors", "--settings", str(tmp_path / "agent.toml")), capture_output=True, text=True
    )
    assert listing.returncode == 0, listing.stderr
    (row,) = listing.stdout.splitlines()[1:]
    assert row.split()[:4] == ["t", "simulated", "0.1s", "ok"] and "value=" in row
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    with contextlib.closing(sqlite3.connect(tmp_path / "spool.db")) as db:
        (left,) = db.execute("SELECT count(*) FROM points").fetchone()
    assert left == 0
    assert len(stored(influxd)) >= 15
    status = subprocess.run(
        fieldstation_cmd("status", "--settings", str(tmp_path / "agent.toml"), "--json"),
        capture_output=True,
        text=True,
        check=True,
    )
    (row,) = json.loads(status.stdout)["sinks"]
    assert row["depth"] == 0
    # Every window went straight to the sink, none through the spool: status still knows the last write.
    assert row["last_success"] is not None and row["last_success"] >= started  # a write of this run


@needs_root
def test_a_full_drive_holds_readings_in_memory_says_so_once_and_stores_them_when_freed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with loop_ext4(tmp_path / "data.img", tmp_path / "data", size_mb=16) as fs:
        settings = settings_for(tmp_path, {"down": f"http://127.0.0.1:{free_port()}"})
        settings.spool = SpoolSettings(path=fs.mount / "spool.db")
        with caplog.at_level(logging.INFO), running_agent(settings, sensors()) as (agent, emitted):
            wait_for(lambda: agent.spool.backlog("down").depth >= 20, 20, "points spooled")
            filler = fill(fs)
            wait_for(lambda: agent._held, 20, "readings held in memory")
            time.sleep(3)  # several failing ticks: still one line
            held = {r.fields.get("held_in_memory") for r in agent.health_readings()}
            assert max(h for h in held if h is not None) > 0
            filler.unlink()
            wait_for(lambda: not agent._held, 20, "the held readings to be stored")
        assert agent.dropped_in_memory == 0
        acknowledged = spooled_lines(fs.mount / "spool.db")
    failed = [r for r in caplog.records if "spool commit failed" in r.getMessage()]
    assert len(failed) == 1 and "database or disk is full" in failed[0].getMessage()
    assert failed[0].exc_info is None  # no traceback
    assert len([r for r in caplog.records if "takes commits again" in r.getMessage()]) == 1
    keys = sorted((s, t) for m, s, t in map(key_of_line, acknowledged) if m == "simulated")
    assert keys == sorted((r.tags["sensor"], r.time_ns) for r in emitted)  # every reading, once


@needs_root
def test_a_full_drive_keeps_the_newest_readings_up_to_the_bound_and_counts_the_rest(tmp_path: Path) -> None:
    with loop_ext4(tmp_path / "data.img", tmp_path / "data", size_mb=16) as fs:
        settings = settings_for(tmp_path, {"down": f"http://127.0.0.1:{free_port()}"})
        settings.spool = SpoolSettings(path=fs.mount / "spool.db", max_pending=1000)
        settings.sinks = [SinkSettings(name="down", url=settings.sinks[0].url, timeout=1)]
        agent = Agent(settings, [])
        try:
            agent.spool.append(["m,sensor=first value=0 1"])
            filler = fill(fs)
            readings = [Reading("m", {"value": float(i)}, {"sensor": "s"}, 10 + i) for i in range(3000)]
            agent._emit(readings)
            with pytest.raises(Exception, match="database or disk is full"):
                agent.commit()
            assert agent.dropped_in_memory == 2000
            fields = {k: v for r in agent.health_readings() for k, v in r.fields.items()}
            assert fields["held_in_memory"] == 1000 and fields["dropped_in_memory"] == 2000
            filler.unlink()
            assert agent.commit() == 1000
        finally:
            agent.spool.close()  # never started: only its spool is open
        assert spooled_lines(fs.mount / "spool.db") == ["m,sensor=first value=0 1"] + [
            r.to_line() for r in readings[2000:]
        ]


def test_points_the_server_can_never_accept_are_dropped_and_counted_and_the_agent_process_keeps_delivering(
    influxd: LocalInfluxd, tmp_path: Path
) -> None:
    (tmp_path / "config.py").write_text(
        "from fieldstation.sensors.simulated import Simulated\nsensors = [Simulated(name='t', interval=0.1)]\n"
    )
    (tmp_path / "agent.toml").write_text(
        f'config = "{tmp_path / "config.py"}"\nstate_file = "{tmp_path / "state.json"}"\nhealth_interval = 1\n'
        f'[spool]\npath = "{tmp_path / "spool.db"}"\n'
        f'[[sinks]]\nname = "local"\nurl = "{influxd.url}"\n'
    )
    log = tmp_path / "agent.log"
    proc = start_agent_process(tmp_path / "agent.toml", log)
    try:
        wait_for(lambda: len(stored(influxd)) >= 10, 30, "the agent to store readings")
        # Straight into the spool, past the validation readings get where they are made: a 26 MB string (over
        # InfluxDB's 25 MB request limit) and an empty field name (what {"": 1.0} encodes to), among good points.
        t = time.time_ns()
        raw = [
            f"simulated,sensor=before value=1 {t}",
            f'simulated,sensor=huge text="{"x" * 26_000_000}" {t}',
            f"simulated,sensor=empty =1.0 {t}",
            f"simulated,sensor=after value=2 {t}",
        ]
        spool = Spool(tmp_path / "spool.db", sinks=["local"])
        spool.append(raw)
        spool.close()
        injected = time.time_ns()
        wait_for(lambda: {("before", t), ("after", t)} <= set(stored(influxd)), 60, "the good points around them")
        # The sensor's readings keep arriving past the refused points.
        wait_for(lambda: any(ts > injected + 2 * 10**9 for s, ts in stored(influxd) if s == "t"), 30, "new readings")
        status = subprocess.run(
            fieldstation_cmd("status", "--settings", str(tmp_path / "agent.toml"), "--json"),
            capture_output=True,
            text=True,
            check=True,
        )
        (row,) = json.loads(status.stdout)["sinks"]
        assert row["dropped_points"] == 2 and row["depth"] < 100
        counted = 'SELECT last("dropped_points") FROM "fieldstation_sink"'
        wait_for(lambda: influxd.rows(counted, "fieldstation")[0]["last"] == 2, 30, "the health reading to count both")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    text = log.read_text()
    dropped = [line for line in text.splitlines() if "dropped a point" in line]
    assert len(dropped) == 2, dropped
    assert "of simulated (sensor huge)" in dropped[0] and "of simulated (sensor empty)" in dropped[1]
    assert all(len(line) < 800 for line in dropped)
    assert "Traceback" not in text
    assert not any(s in ("huge", "empty") for s, _ in stored(influxd))


def test_after_an_outage_past_the_backoff_cap_delivery_resumes_once_ping_answers(
    influxd: LocalInfluxd, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, "fieldstation.sink"), running_agent(
        settings_for(tmp_path, {"local": influxd.url}), sensors()
    ) as (agent, emitted):
        wait_for(lambda: len(stored(influxd)) >= 10, 20, "first points stored")
        influxd.stop()
        time.sleep(BACKOFF_MAX + 5)  # the sink's backoff has reached its cap
        assert agent.spool.backlog("local").depth > 0
        influxd.start()  # returns once /ping answers
        wait_for(lambda: caught_up(agent, "local"), 60, "the backlog to drain")
        assert agent.sinks[0].state.probe_recoveries >= 1
    messages = [(r.created, r.getMessage()) for r in caplog.records]
    probed = [when for when, m in messages if "answers /ping again: retrying now" in m]
    assert probed
    again = [when for when, m in messages if m == "sink local: writing again" and when >= probed[0]]
    assert again
    keys = sorted((r.tags["sensor"], r.time_ns) for r in emitted)
    assert stored(influxd) == keys  # every reading exactly once


def test_a_result_a_root_job_queued_reaches_influxdb_through_the_running_agent(
    influxd: LocalInfluxd, tmp_path: Path
) -> None:
    """A backup (root) queues its result in the agent's incoming folder instead of opening the spool; the running
    agent takes it into the spool and its sink delivers it; a file that is not text is set aside, once."""
    from fieldstation.spool import enqueue, queue_dir

    settings = settings_for(tmp_path, {"local": influxd.url})
    with running_agent(settings, sensors(1.0)):
        folder = queue_dir(settings.spool.path)
        assert folder.is_dir() and folder.stat().st_mode & 0o777 == 0o700  # made by the agent, its own
        (folder / "garbage-1.lp").write_bytes(b"\xff\xfe not text")
        enqueue(settings.spool.path, ["fieldstation_backup,kind=backup ok=true,bytes=5i 1700000000000000000"], "backup")
        rows: list[dict[str, object]] = []
        wait_for(
            lambda: bool(rows.extend(influxd.rows('SELECT * FROM "fieldstation_backup"', "fieldstation")) or rows),
            20,
            "the queued result in InfluxDB",
        )
        assert rows[0]["bytes"] == 5 and rows[0]["ok"] is True
        assert sorted(p.name for p in folder.iterdir()) == ["garbage-1.lp.rejected"]
