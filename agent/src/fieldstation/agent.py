"""The service: scheduler → spool → sinks, plus the agent's own health readings and live state.

Readings emitted by the scheduler are encoded to line protocol at once and committed to the spool every
``commit_interval``; only then are they acknowledged. Each sink drains the spool on its own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fieldstation import sdnotify
from fieldstation.energy import EnergyAccounting
from fieldstation.ingest.inbox import Inbox
from fieldstation.reading import Reading
from fieldstation.scheduler import Scheduler
from fieldstation.sensor import Sensor
from fieldstation.settings import AgentSettings
from fieldstation.sink import SinkWorker, WriteError
from fieldstation.spool import Spool

log = logging.getLogger("fieldstation.agent")

FINAL_DRAIN_SECONDS = 5.0


def _saved_state(path: Path) -> dict[str, Any]:
    """The state file of the previous run, or nothing if there is none (or it is unreadable)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        sensors: list[Sensor],
        *,
        on_readings: Callable[[list[Reading]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.spool = Spool(
            settings.spool.path, max_bytes=settings.spool.max_bytes, sinks=[s.name for s in settings.sinks]
        )
        self.sinks = [SinkWorker(s, self.spool) for s in settings.sinks]
        self.scheduler = Scheduler(sensors, self._emit)
        self.energy = EnergyAccounting(settings.energy, _saved_state(settings.state_file).get("energy"))
        # Dropped files go straight to the spool from the inbox's own thread (SQLite connections are per thread).
        self.inbox = Inbox(settings.ingest, append=self.spool.append) if settings.ingest else None
        self.on_readings = on_readings
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._committer_stop = threading.Event()
        self._committer = threading.Thread(target=self._commit_loop, name="spool-commit", daemon=True)
        self.acknowledged = 0
        self.last_commit_ok = time.monotonic()

    # -- readings into the spool -------------------------------------------------------------------

    def _emit(self, readings: list[Reading]) -> None:
        readings = readings + self.energy.readings(readings)
        lines = [r.to_line() for r in readings]
        with self._lock:
            self._pending.extend(lines)
        if self.on_readings is not None:
            self.on_readings(readings)

    def commit(self) -> int:
        """Commit pending readings to the spool; returns how many were acknowledged."""
        with self._lock:
            lines, self._pending = self._pending, []
        if lines:
            try:
                self.spool.append(lines)
            except BaseException:
                # Not stored: put them back in front, in order, so a full or failing drive loses nothing silently.
                with self._lock:
                    self._pending[:0] = lines
                raise
            self.acknowledged += len(lines)
        return len(lines)

    def _commit_loop(self) -> None:
        interval = self.settings.spool.commit_interval
        last_trim = 0.0
        while not self._committer_stop.wait(interval):
            try:
                self.commit()
                self.last_commit_ok = time.monotonic()
                if time.monotonic() - last_trim >= 1.0:
                    self.spool.trim()
                    last_trim = time.monotonic()
            except Exception:
                # A full or broken data drive: keep the readings in memory and say so; retry next round.
                log.exception("spool commit failed; readings kept in memory")

    # -- health and state --------------------------------------------------------------------------

    def health_readings(self) -> list[Reading]:
        t = time.time_ns()
        out = self.scheduler.health_readings(t, time.monotonic())
        agent = {"sensor": "agent"}
        for sink in self.sinks:
            b = self.spool.backlog(sink.state.name)
            s = sink.state
            tags = {**agent, "sink": s.name}
            out.append(Reading("fieldstation_spool", {"depth": b.depth}, {**tags, "unit": "count"}, t))
            out.append(Reading("fieldstation_spool", {"oldest_unsent_age": b.oldest_age_s}, {**tags, "unit": "s"}, t))
            fields = {
                "points_written": s.points_written,
                "write_failures": s.write_failures,
                "rejected_batches": s.rejected_batches,
            }
            out.append(Reading("fieldstation_sink", dict(fields), {**tags, "unit": "count"}, t))
        out.append(
            Reading("fieldstation_spool", {"dropped": self.spool.counter("dropped")}, {**agent, "unit": "count"}, t)
        )
        return out

    def state(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "time": time.time(),
            "pid": os.getpid(),
            "sensors": {
                name: {
                    "driver": type(st.sensor).driver or type(st.sensor).__name__,
                    "interval": st.sensor.interval,
                    "state": st.state(now),
                    "last": st.last_fields,
                    "unit": st.sensor.unit,
                    "reads": st.reads,
                    "errors": st.errors,
                    "last_error": st.last_error,
                }
                for name, st in self.scheduler.states.items()
            },
            "sinks": {
                s.state.name: {
                    "url": s.settings.url,
                    "last_success": s.state.last_success,
                    "last_error": s.state.last_error,
                    "write_failures": s.state.write_failures,
                }
                for s in self.sinks
            },
            "energy": dict(self.energy.last),
        }

    def write_state(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.state(), default=str, indent=1))
            tmp.replace(path)
        except OSError as exc:
            log.warning("cannot write state file %s: %s", path, exc)

    async def _housekeeping(self) -> None:
        interval = self.settings.health_interval
        watchdog = sdnotify.watchdog_interval()
        next_health = time.monotonic()
        while True:
            # The watchdog is fed only while the spool takes commits: a data drive that hangs or fails gets
            # the service restarted by systemd instead of readings piling up in memory.
            if watchdog and time.monotonic() - self.last_commit_ok < max(10.0, 5 * self.settings.spool.commit_interval):
                sdnotify.notify("WATCHDOG=1")
            if time.monotonic() >= next_health:
                next_health += interval
                try:
                    readings = await asyncio.to_thread(self.health_readings)
                    with self._lock:
                        self._pending.extend(r.to_line() for r in readings)
                    await asyncio.to_thread(self.write_state, self.settings.state_file)
                except Exception:
                    log.exception("health readings failed")
            await asyncio.sleep(min(watchdog or interval, interval, 1.0))

    # -- running -----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._committer.start()
        for sink in self.sinks:
            sink.start()
        if self.inbox is not None:
            self.inbox.start()
        housekeeping = asyncio.create_task(self._housekeeping())
        sdnotify.notify("READY=1")
        log.info("running %d sensors, %d sinks", len(self.scheduler.sensors), len(self.sinks))
        try:
            await self.scheduler.run(stop)
        finally:
            sdnotify.notify("STOPPING=1")
            housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await housekeeping
            await asyncio.to_thread(self.shutdown)

    def shutdown(self) -> None:
        """Flush: commit everything pending, give each sink a last bounded chance to drain, stop threads."""
        if self.inbox is not None:
            self.inbox.stop()  # a file half-parsed stays in the inbox and is taken again at the next start
        self._committer_stop.set()
        self._committer.join(10)
        self.commit()
        for sink in self.sinks:
            sink.stop()
        deadline = time.monotonic() + FINAL_DRAIN_SECONDS
        for sink in self.sinks:
            with contextlib.suppress(WriteError):
                while time.monotonic() < deadline and sink.drain_once():
                    pass
            sink.writer.close()
        try:
            self.spool.trim()
        except Exception:
            log.exception("final spool trim failed")
        self.write_state(self.settings.state_file)
        self.spool.close()

    def run_forever(self) -> int:
        """Run until SIGTERM or SIGINT; flush and return 0."""

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await self.run(stop)

        asyncio.run(main())
        log.info("stopped; %d readings acknowledged this run", self.acknowledged)
        return 0
