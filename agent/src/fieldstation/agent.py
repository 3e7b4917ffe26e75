"""The service: scheduler → sinks (→ spool), plus the agent's own health readings and live state.

Readings emitted by the scheduler are encoded to line protocol at once and held in memory for one
``commit_interval``. At each commit tick the window goes straight to every caught-up sink; a window every
sink confirmed is acknowledged and never touches the disk, one that some sink missed is committed to the
spool (acknowledged once that returns), and each sink drains its spooled backlog on its own thread.
While the spool cannot take commits (a full drive) readings stay in memory up to ``max_pending``.
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
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fieldstation import sdnotify
from fieldstation.energy import EnergyAccounting
from fieldstation.ingest.inbox import Inbox
from fieldstation.mqtt_output import MqttOutput
from fieldstation.reading import Reading
from fieldstation.scheduler import Scheduler
from fieldstation.sensor import Sensor
from fieldstation.settings import AgentSettings
from fieldstation.sink import SinkWorker, WriteError
from fieldstation.spool import Spool, queue_dir

log = logging.getLogger("fieldstation.agent")

FINAL_DRAIN_SECONDS = 5.0


def bytes_written(proc_io: Path = Path("/proc/self/io")) -> int | None:
    """Bytes this process has sent to block devices (page cache writeback included), or None if unknown.

    ``write_bytes`` less ``cancelled_write_bytes`` (dirty pages truncated before they reached the disk);
    the filesystem's own journal is not in it (docs/decisions/0001-store-and-forward.md, Flash wear).
    """
    try:
        fields = dict(line.split(": ", 1) for line in proc_io.read_text().splitlines())
        return int(fields["write_bytes"]) - int(fields.get("cancelled_write_bytes", 0))
    except (OSError, KeyError, ValueError):
        return None


def _saved_state(path: Path) -> dict[str, Any]:
    """The state file of the previous run, or nothing if there is none (or it is unreadable)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_json(path: Path, value: object) -> None:
    tmp = path.with_suffix(".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(value, default=str, indent=1))
    tmp.replace(path)


def _energy_baseline(settings: AgentSettings) -> dict[str, Any]:
    """The meters' last counter values to count from: the live state file's when it is the newer (the agent restarted
    and /run survived: at most one health interval old), else the energy file's if the agent stopped cleanly, else
    none. An energy file left by a power cut may be up to ``energy_save_interval`` old, and the energy of that time
    was written already: counting from it would count it twice, so the counters are re-based instead."""
    state, saved = _saved_state(settings.state_file), _saved_state(settings.energy_file)
    if isinstance(state.get("energy"), dict) and float(state.get("time") or 0) >= float(saved.get("time") or 0):
        return dict(state["energy"])
    if isinstance(saved.get("energy"), dict) and saved["energy"]:
        if saved.get("clean"):
            return dict(saved["energy"])
        log.warning("%s: left by an unclean stop (power cut?): energy counters re-based, the energy used since "
                    "then is not counted", settings.energy_file)
    return {}


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
        try:  # where jobs running as other users (backups) leave their readings
            queue_dir(settings.spool.path).mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            log.warning("%s: cannot create the queue folder: %s", queue_dir(settings.spool.path), exc)
        self.scheduler = Scheduler(sensors, self._emit)
        self.energy = EnergyAccounting(settings.energy, _energy_baseline(settings))
        self._energy_saved: dict[str, float] | None = None  # what energy_file holds, once this run wrote it
        self._energy_saved_at = 0.0
        # Dropped files go straight to the spool from the inbox's own thread (SQLite connections are per thread).
        self.inbox = Inbox(settings.ingest, append=self._append_dropped) if settings.ingest else None
        self.on_readings = on_readings
        # Best effort, beside the durable path: readings (not the energy counters' tariff split) to a broker.
        self.mqtt_output = MqttOutput(settings.mqtt_output, sensors) if settings.mqtt_output else None
        self._pending: list[str] = []
        # Windows taken out of _pending but not yet stored, with the sinks that confirmed each: only while the
        # spool fails. Never more than max_pending lines; the oldest beyond that are dropped and counted.
        self._held: deque[tuple[list[str], frozenset[str]]] = deque()
        self._holding_since: float | None = None
        self._dropped_before_holding = 0
        self.dropped_in_memory = 0
        self._delivery = ThreadPoolExecutor(max_workers=len(self.sinks), thread_name_prefix="deliver")
        self._started = time.monotonic()
        self._written_at_start = bytes_written() or 0
        self._lock = threading.Lock()
        self._committer_stop = threading.Event()
        self._committer = threading.Thread(target=self._commit_loop, name="spool-commit", daemon=True)
        self.acknowledged = 0
        self.last_commit_ok = time.monotonic()

    # -- readings into the spool -------------------------------------------------------------------

    def _emit(self, readings: list[Reading]) -> None:
        if self.mqtt_output is not None:
            self.mqtt_output.put(readings)
        energy = self.energy.readings(readings)
        if energy:
            readings = readings + energy
        lines = [r.to_line() for r in readings]
        with self._lock:
            self._pending.extend(lines)
        if self.on_readings is not None:
            self.on_readings(readings)

    def _append_dropped(self, lines: list[str]) -> int:
        """A dropped file's points: committed to the spool (the inbox's thread), then every sink woken to send them."""
        last = self.spool.append(lines)
        for sink in self.sinks:
            sink.wake()
        return last

    def _deliver(self, lines: list[str]) -> frozenset[str]:
        """Send a window to every caught-up sink at once; the names of those that confirmed it."""
        live = [sink for sink in self.sinks if self.spool.caught_up(sink.state.name)]
        results = list(self._delivery.map(lambda sink: sink.deliver(lines), live))
        return frozenset(sink.state.name for sink, ok in zip(live, results, strict=True) if ok)

    def commit(self) -> int:
        """Deliver the pending window, spool what some sink missed; returns how many were acknowledged.

        Raises the spool's error when a window could not be stored; its readings are then held in memory.
        """
        with self._lock:
            lines, self._pending = self._pending, []
        acknowledged = 0
        if lines:
            confirmed = self._deliver(lines)
            if len(confirmed) == len(self.sinks):
                acknowledged += len(lines)  # every sink has them: nothing to write
            else:
                self._held.append((lines, confirmed))
        try:
            while self._held:
                held, confirmed = self._held[0]
                self.spool.append(held, confirmed)
                self._held.popleft()
                acknowledged += len(held)
        except BaseException:
            self._bound_held()
            raise
        finally:
            self.acknowledged += acknowledged
        return acknowledged

    def _bound_held(self) -> None:
        """Drop the oldest held readings beyond max_pending, counted."""
        limit = self.settings.spool.max_pending
        excess = sum(len(held) for held, _ in self._held) - limit
        while excess > 0:
            held, confirmed = self._held[0]
            if len(held) <= excess:
                self._held.popleft()
                cut = len(held)
            else:
                cut = excess
                self._held[0] = (held[cut:], confirmed)
            excess -= cut
            self.dropped_in_memory += cut

    def _commit_loop(self) -> None:
        interval = self.settings.spool.commit_interval
        last_trim = 0.0
        while not self._committer_stop.wait(interval):
            try:
                self.commit()
                if self._holding_since is not None:
                    log.warning(
                        "spool takes commits again after %.0f s; the readings held in memory are stored, "
                        "%d dropped meanwhile (oldest first)",
                        time.monotonic() - self._holding_since,
                        self.dropped_in_memory - self._dropped_before_holding,
                    )
                    self._holding_since = None
                if time.monotonic() - last_trim >= 1.0:
                    self.spool.take_queued()
                    self.spool.trim()
                    last_trim = time.monotonic()
            except Exception as exc:
                # A full or broken data drive: the readings stay in memory (bounded); one line when it starts,
                # one when it ends (above), never a traceback per tick.
                if self._holding_since is None:
                    self._holding_since = time.monotonic()
                    self._dropped_before_holding = self.dropped_in_memory
                    log.error(
                        "spool commit failed (%s: %s); holding readings in memory, at most %d, the oldest "
                        "dropped beyond that",
                        type(exc).__name__,
                        exc,
                        self.settings.spool.max_pending,
                    )
            # A tick that ran to its end, stored or held, is not a hung drive: feed the watchdog.
            self.last_commit_ok = time.monotonic()

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
                "dropped_points": s.dropped_points,
                "probe_recoveries": s.probe_recoveries,
            }
            out.append(Reading("fieldstation_sink", dict(fields), {**tags, "unit": "count"}, t))
        out.append(
            Reading("fieldstation_spool", {"dropped": self.spool.counter("dropped")}, {**agent, "unit": "count"}, t)
        )
        held = sum(len(lines) for lines, _ in self._held)
        out.append(
            Reading(
                "fieldstation_spool",
                {"held_in_memory": held, "dropped_in_memory": self.dropped_in_memory},
                {**agent, "unit": "count"},
                t,
            )
        )
        if self.mqtt_output is not None:
            out += self.mqtt_output.health_readings(t)
        per_day = self.bytes_written_per_day()
        if per_day is not None:
            out.append(Reading("fieldstation_agent", {"bytes_written_per_day": per_day}, {**agent, "unit": "B/d"}, t))
        return out

    def bytes_written_per_day(self) -> float | None:
        """The agent's own writes to disk since it started, extrapolated to a day."""
        written = bytes_written()
        if written is None:
            return None
        return (written - self._written_at_start) * 86400 / max(time.monotonic() - self._started, 1.0)

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
                    "dropped_points": s.state.dropped_points,
                }
                for s in self.sinks
            },
            "energy": dict(self.energy.last),
            "bytes_written_per_day": self.bytes_written_per_day(),
        }

    def write_state(self, path: Path) -> None:
        try:
            _write_json(path, self.state())
        except OSError as exc:
            log.warning("cannot write state file %s: %s", path, exc)

    def save_energy(self, *, clean: bool = False) -> None:
        """The counters' last values to the energy file (on the data drive, unlike the live state file in /run):
        when they changed, at most every ``energy_save_interval`` (each write costs the flash a journal commit),
        and at a clean stop. ``clean`` says the values are the last ones: a power cut leaves ``clean: false``."""
        now = time.monotonic()
        last = dict(self.energy.last)
        if not clean and self._energy_saved is not None and (
            last == self._energy_saved or now - self._energy_saved_at < self.settings.energy_save_interval
        ):
            return
        try:
            _write_json(self.settings.energy_file, {"time": time.time(), "clean": clean, "energy": last})
        except OSError as exc:
            log.warning("cannot write the energy file %s: %s", self.settings.energy_file, exc)
            return
        self._energy_saved, self._energy_saved_at = last, now

    async def _housekeeping(self) -> None:
        interval = self.settings.health_interval
        watchdog = sdnotify.watchdog_interval()
        next_health = time.monotonic()
        while True:
            # The watchdog is fed only while commit ticks run to their end: a data drive that hangs gets the
            # service restarted by systemd. A full one does not (a restart cannot help): readings are held.
            if watchdog and time.monotonic() - self.last_commit_ok < max(10.0, 5 * self.settings.spool.commit_interval):
                sdnotify.notify("WATCHDOG=1")
            if time.monotonic() >= next_health:
                next_health += interval
                try:
                    readings = await asyncio.to_thread(self.health_readings)
                    with self._lock:
                        self._pending.extend(r.to_line() for r in readings)
                    await asyncio.to_thread(self.write_state, self.settings.state_file)
                    await asyncio.to_thread(self.save_energy)
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
        if self.mqtt_output is not None:
            self.mqtt_output.start()
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
        if self.mqtt_output is not None:
            self.mqtt_output.stop()
        self._committer_stop.set()
        self._committer.join(10)
        try:
            self.commit()
        except Exception as exc:
            held = sum(len(lines) for lines, _ in self._held)
            log.error("final spool commit failed (%s: %s): %d readings not stored", type(exc).__name__, exc, held)
        self._delivery.shutdown()
        for sink in self.sinks:
            sink.stop()
        deadline = time.monotonic() + FINAL_DRAIN_SECONDS
        for sink in self.sinks:
            with contextlib.suppress(WriteError):
                while time.monotonic() < deadline and sink.drain_once():
                    pass
            sink.writer.close()
        try:
            self.spool.take_queued()
            self.spool.trim()
        except Exception:
            log.exception("final spool trim failed")
        self.write_state(self.settings.state_file)
        self.save_energy(clean=True)
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
