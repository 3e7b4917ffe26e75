"""Running the real agent in tests: in-process (a thread with its own event loop) or as a `fieldstation run`
subprocess, plus helpers to compare what was acknowledged with what a server holds."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fieldstation.agent import Agent
from fieldstation.influxd import LocalInfluxd
from fieldstation.reading import Reading
from fieldstation.sensor import Sensor
from fieldstation.settings import AgentSettings, SinkSettings, SpoolSettings


def settings_for(tmp: Path, sinks: dict[str, str], **kw: object) -> AgentSettings:
    """Agent settings with a spool under ``tmp`` and one sink per ``name: url`` (database fieldstation)."""
    return AgentSettings(
        config=tmp / "config.py",
        spool=SpoolSettings(path=tmp / "spool.db"),
        sinks=[SinkSettings(name=n, url=u, database="fieldstation", timeout=2) for n, u in sinks.items()],
        **{"state_file": tmp / "state.json", "energy_file": tmp / "energy.json", **kw},  # type: ignore[arg-type]
    )


@contextmanager
def running_agent(settings: AgentSettings, sensors: list[Sensor]) -> Iterator[tuple[Agent, list[Reading]]]:
    """The real Agent on a background thread; yields it and the list of readings it emitted so far."""
    emitted: list[Reading] = []
    lock = threading.Lock()

    def on_readings(readings: list[Reading]) -> None:
        with lock:
            emitted.extend(readings)

    agent = Agent(settings, sensors, on_readings=on_readings)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(agent.run(stop),), daemon=True)
    thread.start()
    try:
        yield agent, emitted
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        assert not thread.is_alive(), "agent did not stop within 60 s"
        loop.close()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.2) -> None:
    """Poll ``predicate`` until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def stored(server: LocalInfluxd, measurement: str = "simulated") -> list[tuple[str, int]]:
    """(sensor, time_ns) of every point of a measurement in the database ``fieldstation``, sorted."""
    rows = server.rows(f'SELECT * FROM "{measurement}" GROUP BY "sensor"', "fieldstation")
    return sorted((str(r["sensor"]), int(r["time"])) for r in rows)


def key_of_line(line: str) -> tuple[str, str, int]:
    """(measurement, sensor, time_ns) of one line of line protocol written by the agent."""
    head, _, rest = line.partition(" ")
    ts = int(rest.rsplit(" ", 1)[1])
    parts = head.split(",")
    tags = dict(p.split("=", 1) for p in parts[1:])
    return parts[0], tags.get("sensor", ""), ts


def fieldstation_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fieldstation.cli", *args]


def start_agent_process(settings_file: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            fieldstation_cmd("run", "--settings", str(settings_file)),
            stdout=out,
            stderr=out,
            env={**os.environ, **(env or {})},
        )


class Recorder:
    """An ``emit`` for a Scheduler under test: keeps every reading, safe to read while the scheduler runs."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.lock = threading.Lock()

    def __call__(self, readings: list[Reading]) -> None:
        with self.lock:
            self.readings.extend(readings)

    def of(self, sensor: str) -> list[Reading]:
        with self.lock:
            return [r for r in self.readings if r.tags["sensor"] == sensor]

    def with_field(self, name: str) -> list[Reading]:
        with self.lock:
            return [r for r in self.readings if name in r.fields]

    def statuses(self) -> list[str]:
        """The UPS statuses seen, transitions only."""
        with self.lock:
            seen = [str(r.fields["status"]) for r in self.readings if "status" in r.fields]
        return [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s]
