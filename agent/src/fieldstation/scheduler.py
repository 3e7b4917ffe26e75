"""The scheduler: every sensor on its own interval, none able to delay another.

- Tick ``k`` of a sensor is due at ``start + phase + k·interval`` on the loop's monotonic clock, so the schedule
  never drifts. A late tick is skipped, never bunched. Sensors come in slots of up to ``SLOT_SIZE`` sharing an
  interval and a phase (phases spread over the first second); a slot has one timer, so a tick of 20 sensors is one
  wake-up, and the readings of its inline reads are emitted together, once. A sensor whose previous read is still
  running skips the tick.
- An async read that completes without waiting (a computed or cached value) runs inline, with no Task; one
  that waits continues as a Task under its timeout.
- Blocking drivers run in a worker thread: one thread per bus (sensors sharing a serial port are read one at a
  time by that owner), one per sensor otherwise. Async drivers run on the loop.
- Each read has a timeout. A failed or hung read closes the driver and reopens it after an exponential backoff.
  A hung blocking read keeps its thread; the sensor is skipped until that thread comes back.
- A sensor with no good reading for ``stale_after`` intervals is stale.
- Whatever a read returns or raises, the sensor is rescheduled: a problem is counted as an error and logged in one
  line, once per distinct problem. What a blocking read returned is validated and converted on its own thread, so a
  large read costs the loop nothing; what an async read returned is bounded by the limits of reading.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import logging
import math
import queue
import threading
import time
import types
from collections.abc import Callable, Coroutine, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from fieldstation.reading import Reading
from fieldstation.sensor import Plan, Processed, Sensor, process

log = logging.getLogger("fieldstation.scheduler")

Emit = Callable[[list[Reading]], None]

BACKOFF_MAX = 60.0
#: What a driver's read() may raise and the scheduler survives (a read calling sys.exit() included). Not
#: asyncio.CancelledError: that is the scheduler stopping a read. Signals are handled by the loop, not raised.
READ_ERRORS = (Exception, SystemExit, KeyboardInterrupt)
MAX_MESSAGE = 300  # characters of a driver's error message kept in a log line
#: Sensors whose ticks share one instant (one wake-up of the loop). Every wake-up costs CPU, so sensors come in
#: slots; a whole slot served at once delays its last sensor, so slots are small. Slots are spread over the
#: first second (bench/RESULTS.md has the figures behind 20).
SLOT_SIZE = 20


def one_line(exc: BaseException) -> str:
    """An exception as one log line: its type and first line of message."""
    try:
        text = str(exc).strip().splitlines()
    except Exception:  # a driver's exception whose __str__ fails
        text = []
    msg = text[0][:MAX_MESSAGE] if text else ""
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) and not msg:
        msg = "timed out"
    name = type(exc).__name__
    return f"{name}: {msg}" if msg else name


@dataclass(slots=True, eq=False)
class SensorState:
    """What the scheduler knows about one sensor; also the source of the agent's health readings."""

    sensor: Sensor
    plan: Plan = field(init=False)  # the sensor's options as process() needs them, taken once
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
    fast: bool = False  # an async driver: try each read inline first
    reading: bool = False  # a read of it runs as a Task: its slot's ticks skip it until that ends
    phase: float = 0.0  # seconds after the scheduler's start of this sensor's tick 0

    def __post_init__(self) -> None:
        self.plan = Plan(self.sensor)

    def is_stale(self, now: float) -> bool:
        since = self.last_ok if self.last_ok is not None else self.started
        return now - since > self.sensor.stale_after * self.sensor.interval

    def state(self, now: float) -> str:
        if self.failures_in_row:
            return "failing"
        if self.is_stale(now):
            return "stale"
        return "ok" if self.last_ok is not None else "starting"


@dataclass(eq=False)
class Slot:
    """Sensors sharing an interval and a phase: one timer, one wake-up and one emit per tick."""

    states: list[SensorState]
    interval: float
    origin: float  # loop time of tick 0
    tick: int = 0
    handle: asyncio.TimerHandle | None = None


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    """Continue a coroutine that was started by hand (``coro.send(None)``) inside the current Task,
    passing results and exceptions (cancellation included) through, as ``await`` would have."""
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as done:
                return done.value


def is_async(sensor: Sensor) -> bool:
    return inspect.iscoroutinefunction(type(sensor).read)


def _process_safely(st: SensorState, raw: Any, time_ns: int) -> Processed:
    """``process``, with a return it cannot make sense of (a mapping whose items() raises) as one invalid entry."""
    try:
        return process(st.sensor, raw, time_ns, st.plan)
    except Exception as exc:
        return Processed(invalid=[f"read() returned {type(raw).__name__} that cannot be read: {one_line(exc)}"])


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
        self._inflight: set[asyncio.Task[list[Reading]]] = set()
        self._slots: list[Slot] = []
        self._start = 0.0

    # -- running -------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then close every sensor."""
        loop = self._loop = asyncio.get_running_loop()
        self._start = start = loop.time()
        slots = math.ceil(len(self.states) / SLOT_SIZE)
        groups: dict[tuple[int, float], list[SensorState]] = {}
        for i, st in enumerate(self.states.values()):
            st.started = start
            st.fast = is_async(st.sensor)
            st.phase = (i // SLOT_SIZE) / slots * min(st.sensor.interval, 1.0)
            groups.setdefault((i // SLOT_SIZE, st.sensor.interval), []).append(st)
        self._slots = [Slot(sts, interval, start + sts[0].phase) for (_, interval), sts in groups.items()]
        for slot in self._slots:
            slot.handle = loop.call_at(slot.origin, self._fire, slot)
        try:
            await stop.wait()
        finally:
            self._stopping = True
            for slot in self._slots:
                if slot.handle is not None:
                    slot.handle.cancel()
            # Cancel until every read is done: on Python 3.11 asyncio.wait_for can swallow a cancellation
            # that arrives just as the awaited read completes (cpython gh-86296).
            while self._inflight:
                for t in self._inflight:
                    t.cancel()
                await asyncio.wait(set(self._inflight), timeout=0.1)
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

    def _reschedule(self, slot: Slot) -> None:
        if self._stopping or self._loop is None:
            return
        loop = self._loop
        # Next tick strictly in the future: a tick that overran skips ticks rather than bunching them.
        slot.tick = max(slot.tick + 1, math.floor((loop.time() - slot.origin) / slot.interval) + 1)
        slot.handle = loop.call_at(slot.origin + slot.tick * slot.interval, self._fire, slot)

    def _fire(self, slot: Slot) -> None:
        """A slot's tick is due: each sensor read inline if it can complete at once, else in a Task; the readings
        of the inline reads emitted together."""
        slot.handle = None
        if self._stopping or self._loop is None:
            return
        loop = self._loop
        now = loop.time()
        time_ns = time.time_ns()  # one stamp for the slot: its reads are microseconds apart
        accepted: list[tuple[SensorState, Processed]] = []
        for st in slot.states:
            if st.reading:
                continue  # the previous read is still running: this tick is skipped
            if st.busy:
                self._still_hung(st, now)
                continue
            if now < st.retry_at:
                continue
            if st.fast and st.opened:
                t0 = time.perf_counter()
                try:
                    coro = st.sensor.read()
                    yielded = coro.send(None)
                except StopIteration as done:
                    processed = self._accept(st, done.value, time_ns, t0)
                    if processed.readings:
                        accepted.append((st, processed))
                    continue
                except READ_ERRORS as exc:
                    self._failed(st, exc)
                    continue
                task = loop.create_task(self._finish(st, coro, yielded, (loop.time(), time_ns, t0)))
            else:
                task = loop.create_task(self.read_once(st))
            st.reading = True
            self._inflight.add(task)
            task.add_done_callback(functools.partial(self._done, st))
        if accepted:
            self._emit_accepted(accepted)
        self._reschedule(slot)

    def _done(self, st: SensorState, task: asyncio.Task[list[Reading]]) -> None:
        self._inflight.discard(task)
        st.reading = False

    async def _finish(
        self, st: SensorState, coro: Coroutine[Any, Any, Any], yielded: Any, stamps: tuple[float, int, float]
    ) -> list[Reading]:
        """Carry on an async read that had to wait, under the timeout counted from its start."""
        started, time_ns, t0 = stamps
        try:
            async with asyncio.timeout_at(started + st.sensor.read_timeout):
                raw = await _resume(coro, yielded)
        except asyncio.CancelledError:
            coro.close()
            raise
        except READ_ERRORS as exc:
            coro.close()
            self._failed(st, exc)
            return []
        return self._succeeded(st, raw, time_ns, t0)

    def _executor(self, sensor: Sensor) -> BusWorker:
        key = f"bus:{sensor.bus}" if sensor.bus else f"sensor:{sensor.name}"
        ex = self._executors.get(key)
        if ex is None:
            ex = self._executors[key] = BusWorker(key)
        return ex

    async def _call(self, st: SensorState, fn: Callable[[], Any], timeout: float) -> Any:
        """Call a driver method with a timeout: awaited if async, else on the sensor's bus thread."""
        if inspect.iscoroutinefunction(fn):
            async with asyncio.timeout(timeout):  # no extra Task per read, unlike wait_for on 3.11
                return await fn()
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
        """One read of one sensor, opening it first if needed; returns the readings emitted."""
        loop = asyncio.get_running_loop()
        sensor = st.sensor
        now = loop.time()
        if st.busy:
            self._still_hung(st, now)
            return []
        if now < st.retry_at:
            return []
        time_ns = time.time_ns()
        t0 = time.perf_counter()
        processed: Processed | None = None
        try:
            if not st.opened:
                await self._call(st, sensor.open, sensor.read_timeout)
                st.opened = True
            if is_async(sensor):
                raw = await self._call(st, sensor.read, sensor.read_timeout)
            else:
                # Validated and converted on the sensor's own thread too: a large read costs the loop nothing.
                raw, processed = await self._call(
                    st, functools.partial(self._read_blocking, st, time_ns), sensor.read_timeout
                )
        except asyncio.CancelledError:
            raise
        except READ_ERRORS as exc:
            self._failed(st, exc)
            return []
        return self._succeeded(st, raw, time_ns, t0, processed)

    def _still_hung(self, st: SensorState, now: float) -> None:
        st.errors += 1
        st.timeouts += 1
        self._note_failure(st, now, f"previous read still hung after {st.sensor.read_timeout:g} s", reopen=False)

    @staticmethod
    def _read_blocking(st: SensorState, time_ns: int) -> tuple[Any, Processed]:
        """On the bus thread: read, then make readings of what was read (never raises for what it returned)."""
        raw = st.sensor.read()
        return raw, _process_safely(st, raw, time_ns)

    def _failed(self, st: SensorState, exc: BaseException) -> None:
        st.errors += 1
        st.last_exception = exc
        if isinstance(exc, TimeoutError):
            st.timeouts += 1
            msg = f"read timed out after {st.sensor.read_timeout:g} s"
        else:
            msg = one_line(exc)
        self._note_failure(st, time.monotonic(), msg, reopen=getattr(exc, "reopen", True))

    def _succeeded(
        self, st: SensorState, raw: Any, time_ns: int, t0: float, processed: Processed | None = None
    ) -> list[Reading]:
        """A read returned ``raw``: store what is good in it, count and log once what is not. Never raises."""
        processed = self._accept(st, raw, time_ns, t0, processed)
        if not processed.readings:
            return []
        return processed.readings if self._emit_accepted([(st, processed)]) else []

    def _accept(
        self, st: SensorState, raw: Any, time_ns: int, t0: float, processed: Processed | None = None
    ) -> Processed:
        """Count a read that returned ``raw`` and make its readings; what is invalid in it counted and logged once."""
        latency = time.perf_counter() - t0
        st.reads += 1
        st.last_latency = latency
        st.latency_total += latency
        if processed is None:
            processed = _process_safely(st, raw, time_ns)
        st.out_of_range += processed.out_of_range
        if processed.invalid:
            st.invalid += len(processed.invalid)
            st.errors += 1
            msg = "invalid reading: " + processed.summary()
            if processed.readings:
                self._log_change(st, msg)  # the good fields are kept; the sensor is not failing
            else:
                self._note_failure(st, time.monotonic(), msg, reopen=False)  # it answered: poll again, no reconnect
        return processed

    def _emit_accepted(self, accepted: list[tuple[SensorState, Processed]]) -> bool:
        """Hand the readings of one or more reads to ``emit`` in one call; each sensor is good once they are taken.
        False when ``emit`` failed (each sensor then counts an error)."""
        batch = accepted[0][1].readings if len(accepted) == 1 else [r for _, p in accepted for r in p.readings]
        now = time.monotonic()
        try:
            self.emit(batch)
        except Exception as exc:  # not the driver's fault, but a sensor must not be lost to it
            for st, _ in accepted:
                st.errors += 1
                self._note_failure(st, now, f"readings not stored: {one_line(exc)}", reopen=False)
                log.debug("sensor %s: emit failed", st.sensor.name, exc_info=True)
            return False
        for st, processed in accepted:
            st.last_ok = now
            if st.failures_in_row:
                log.info("sensor %s recovered after %d failed reads", st.sensor.name, st.failures_in_row)
                st.failures_in_row = 0
            if not processed.invalid:
                st.last_error = None
            for r in processed.readings:
                st.last_fields.update(r.fields)
        return True

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
