"""The scheduler: every sensor on its own interval, none able to delay another.

- One asyncio task per sensor; tick ``k`` is due at ``start + k·interval`` on the loop's monotonic clock, so
  the schedule never drifts. A late tick is skipped, never bunched.
- Blocking drivers run in a worker thread: one thread per bus (sensors sharing a serial port are read one at a
  time by that owner), one per sensor otherwise. Async drivers run on the loop.
- Each read has a timeout. A failed or hung read closes the driver and reopens it after an exponential backoff.
  A hung blocking read keeps its thread; the sensor is skipped until that thread comes back.
- A sensor with no good reading for ``stale_after`` intervals is stale.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fieldstation.reading import Reading
from fieldstation.sensor import Sensor, process

log = logging.getLogger("fieldstation.scheduler")

Emit = Callable[[list[Reading]], None]

BACKOFF_MAX = 60.0


def one_line(exc: BaseException) -> str:
    """An exception as one log line: its type and first line of message."""
    text = str(exc).strip().splitlines()
    msg = text[0] if text else ""
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) and not msg:
        msg = "timed out"
    name = type(exc).__name__
    return f"{name}: {msg}" if msg else name


@dataclass
class SensorState:
    """What the scheduler knows about one sensor; also the source of the agent's health readings."""

    sensor: Sensor
    reads: int = 0
    errors: int = 0
    timeouts: int = 0
    out_of_range: int = 0
    invalid: int = 0
    last_latency: float = 0.0
    latency_total: float = 0.0
    last_ok: float | None = None  # monotonic
    last_fields: dict[str, Any] = field(default_factory=dict)
    last_error: str | None = None
    last_exception: BaseException | None = None
    started: float = 0.0
    opened: bool = False
    busy: bool = False  # a blocking read that timed out has not returned yet
    failures_in_row: int = 0
    retry_at: float = 0.0

    def is_stale(self, now: float) -> bool:
        since = self.last_ok if self.last_ok is not None else self.started
        return now - since > self.sensor.stale_after * self.sensor.interval

    def state(self, now: float) -> str:
        if self.failures_in_row:
            return "failing"
        if self.is_stale(now):
            return "stale"
        return "ok" if self.last_ok is not None else "starting"


def is_async(sensor: Sensor) -> bool:
    return inspect.iscoroutinefunction(type(sensor).read)


class BusWorker:
    """One daemon thread that owns a bus: runs driver calls one at a time, in order.

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit, so one hung driver would keep the
    process from exiting. A hung daemon thread is abandoned at exit instead.
    """

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queue.put((fut, fn))
        return fut

    def shutdown(self) -> None:
        self._queue.put(None)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            fut, fn = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the waiting coroutine, which logs it once
                fut.set_exception(exc)


class Scheduler:
    """Reads every sensor on its own interval and hands good readings to ``emit``."""

    def __init__(self, sensors: list[Sensor], emit: Emit, *, backoff_max: float = BACKOFF_MAX) -> None:
        self.sensors = sensors
        self.emit = emit
        self.backoff_max = backoff_max
        self.states = {s.name: SensorState(s) for s in sensors}
        self._executors: dict[str, BusWorker] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._closing: set[asyncio.Future[Any]] = set()

    # -- running -------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then close every sensor."""
        self._loop = asyncio.get_running_loop()
        start = self._loop.time()
        for st in self.states.values():
            st.started = start
        tasks = [asyncio.create_task(self._sensor_loop(st, start), name=st.sensor.name) for st in self.states.values()]
        try:
            await stop.wait()
        finally:
            self._stopping = True
            # Cancel until every task is done: on Python 3.11 asyncio.wait_for can swallow a cancellation
            # that arrives just as the awaited read completes (cpython gh-86296).
            pending = set(tasks)
            while pending:
                for t in pending:
                    t.cancel()
                _, pending = await asyncio.wait(pending, timeout=0.1)
            await self._close_all()

    @contextlib.contextmanager
    def running(self) -> Iterator[Scheduler]:
        """Run in a background thread for the duration of a ``with`` block (tests, ``once``)."""
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        ready = threading.Event()

        async def main() -> None:
            ready.set()
            await self.run(stop)

        thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="scheduler", daemon=True)
        thread.start()
        ready.wait(10)
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(30)
            loop.close()

    # -- one sensor --------------------------------------------------------------------------------

    async def _sensor_loop(self, st: SensorState, start: float) -> None:
        loop = asyncio.get_running_loop()
        interval = st.sensor.interval
        k = 0
        while not self._stopping:
            delay = start + k * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.read_once(st)
            # Next tick strictly in the future: a read that overran skips ticks rather than bunching them.
            k = max(k + 1, math.floor((loop.time() - start) / interval) + 1)

    def _executor(self, sensor: Sensor) -> BusWorker:
        key = f"bus:{sensor.bus}" if sensor.bus else f"sensor:{sensor.name}"
        ex = self._executors.get(key)
        if ex is None:
            ex = self._executors[key] = BusWorker(key)
        return ex

    async def _call(self, st: SensorState, fn: Callable[[], Any], timeout: float) -> Any:
        """Call a driver method with a timeout: awaited if async, else on the sensor's bus thread."""
        if inspect.iscoroutinefunction(fn):
            return await asyncio.wait_for(fn(), timeout)
        if is_async(st.sensor):
            return fn()  # open/close of an async driver: quick, synchronous hooks
        cf = self._executor(st.sensor).submit(fn)
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(cf)), timeout)
        except TimeoutError:
            if not cf.cancel():  # it is running: the thread is stuck until the driver returns
                st.busy = True
                loop = asyncio.get_running_loop()
                cf.add_done_callback(lambda _: loop.call_soon_threadsafe(setattr, st, "busy", False))
            raise

    async def read_once(self, st: SensorState) -> list[Reading]:
        """One scheduled read of one sensor; returns the readings emitted."""
        loop = asyncio.get_running_loop()
        sensor = st.sensor
        now = loop.time()
        if st.busy:
            st.errors += 1
            st.timeouts += 1
            self._note_failure(st, now, f"previous read still hung after {sensor.read_timeout:g} s", reopen=False)
            return []
        if now < st.retry_at:
            return []
        time_ns = time.time_ns()
        t0 = time.perf_counter()
        try:
            if not st.opened:
                await self._call(st, sensor.open, sensor.read_timeout)
                st.opened = True
            raw = await self._call(st, sensor.read, sensor.read_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            st.errors += 1
            st.last_exception = exc
            if isinstance(exc, TimeoutError):
                st.timeouts += 1
                msg = f"read timed out after {sensor.read_timeout:g} s"
            else:
                msg = one_line(exc)
            self._note_failure(st, loop.time(), msg, reopen=True)
            return []
        latency = time.perf_counter() - t0
        st.reads += 1
        st.last_latency = latency
        st.latency_total += latency
        processed = process(sensor, raw, time_ns)
        st.out_of_range += processed.out_of_range
        if processed.invalid:
            st.invalid += len(processed.invalid)
            st.errors += 1
            self._log_change(st, "invalid value: " + "; ".join(processed.invalid))
        if processed.readings:
            st.last_ok = loop.time()
            if st.failures_in_row:
                log.info("sensor %s recovered after %d failed reads", sensor.name, st.failures_in_row)
            st.failures_in_row = 0
            st.last_error = None
            for r in processed.readings:
                st.last_fields.update(r.fields)
            self.emit(processed.readings)
        return processed.readings

    def _log_change(self, st: SensorState, msg: str) -> None:
        if msg != st.last_error:  # log once per distinct error, not once per interval
            log.warning("sensor %s: %s", st.sensor.name, msg)
        st.last_error = msg

    def _note_failure(self, st: SensorState, now: float, msg: str, *, reopen: bool) -> None:
        self._log_change(st, msg)
        st.failures_in_row += 1
        if reopen:
            backoff = min(self.backoff_max, st.sensor.interval * 2 ** (st.failures_in_row - 1))
            st.retry_at = now + backoff
            if st.opened:
                st.opened = False
                self._close_quietly(st)

    def _close_quietly(self, st: SensorState) -> None:
        sensor = st.sensor

        def close() -> None:
            try:
                sensor.close()
            except Exception as exc:
                log.debug("sensor %s: close failed: %s", sensor.name, one_line(exc))

        if is_async(sensor) or inspect.iscoroutinefunction(sensor.close):
            if inspect.iscoroutinefunction(sensor.close):
                task = asyncio.ensure_future(sensor.close())
                self._closing.add(task)  # keep a reference until done, or it may be collected mid-flight
                task.add_done_callback(self._closing.discard)
            else:
                close()
        else:
            self._executor(sensor).submit(close)  # after any read still running on that thread

    async def _close_all(self) -> None:
        for st in self.states.values():
            if st.opened:
                st.opened = False
                if inspect.iscoroutinefunction(st.sensor.close):
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(st.sensor.close(), 5)
                else:
                    self._close_quietly(st)
        for ex in self._executors.values():
            ex.shutdown()
        self._executors.clear()

    # -- health ------------------------------------------------------------------------------------

    def health_readings(self, time_ns: int, now: float) -> list[Reading]:
        """Reads, errors and latency per sensor, as readings of the measurement ``fieldstation_sensor``."""
        out = []
        for name, st in self.states.items():
            tags = {"sensor": name}
            out.append(
                Reading(
                    "fieldstation_sensor",
                    {
                        "reads": st.reads,
                        "errors": st.errors,
                        "timeouts": st.timeouts,
                        "out_of_range": st.out_of_range,
                        "stale": st.is_stale(now),
                    },
                    {**tags, "unit": "count"},
                    time_ns,
                )
            )
            out.append(Reading("fieldstation_sensor", {"latency": st.last_latency}, {**tags, "unit": "s"}, time_ns))
        return out
