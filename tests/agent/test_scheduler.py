"""The scheduler: cadence kept whatever other sensors do; buses serialized; failures back off; stale marked."""

from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict

from fieldstation.reading import Reading
from fieldstation.scheduler import Scheduler
from fieldstation.sensor import Sensor, SensorError
from fieldstation.sensors.simulated import Simulated, SimulatedBlocking


def collect(sensors: list[Sensor], seconds: float) -> tuple[dict[str, list[Reading]], Scheduler]:
    got: dict[str, list[Reading]] = defaultdict(list)
    lock = threading.Lock()

    def emit(readings: list[Reading]) -> None:
        with lock:
            for r in readings:
                got[r.tags["sensor"]].append(r)

    sched = Scheduler(sensors, emit)
    with sched.running():
        time.sleep(seconds)
    return got, sched


def test_faulty_sensors_leave_the_others_cadence_intact() -> None:
    good = [Simulated(name="good_async", interval=0.1), SimulatedBlocking(name="good_thread", interval=0.1)]
    bad = [
        Simulated(name="raises", interval=0.1, fault="raise"),
        Simulated(name="hangs_async", interval=0.1, fault="hang", fault_after=1, timeout=0.3),
        SimulatedBlocking(name="hangs_thread", interval=0.1, fault="hang", fault_after=1, timeout=0.3),
        Simulated(name="garbage", interval=0.1, fault="garbage"),
        Simulated(name="nan", interval=0.1, fault="nan"),
        Simulated(name="out_of_range", interval=0.1, fault="out_of_range", valid_range=(0, 100)),
    ]
    got, sched = collect(good + bad, 3.0)
    for s in good:
        stamps = [r.time_ns for r in got[s.name]]
        assert len(stamps) >= 24, f"{s.name}: {len(stamps)} readings in 3 s at 10 Hz"
        gaps = [(b - a) / 1e9 for a, b in itertools.pairwise(stamps)]
        assert max(gaps) < 0.5, f"{s.name}: a gap of {max(gaps):.3f} s"
        assert sched.states[s.name].errors == 0
    assert not got["raises"] and not got["garbage"] and not got["nan"] and not got["out_of_range"]
    assert len(got["hangs_async"]) == 1 and len(got["hangs_thread"]) == 1
    states = sched.states
    assert states["raises"].last_error == "SensorError: simulated failure"
    assert states["hangs_async"].timeouts >= 1 and states["hangs_thread"].timeouts >= 1
    assert states["garbage"].invalid >= 1 and states["nan"].invalid >= 1
    assert states["out_of_range"].out_of_range >= 1 and states["out_of_range"].errors == 0


READS: list[tuple[str, float, float]] = []  # (sensor, start, end) of every Probe read
CALLS: dict[str, int] = defaultdict(int)  # Flaky's open and close calls


class Probe(Sensor):
    """Records when each read runs, on which bus."""

    driver = "probe"
    bus_name: str | None = None
    duration: float = 0.15

    @property
    def bus(self) -> str | None:
        return self.bus_name

    def read(self) -> float:
        t0 = time.monotonic()
        time.sleep(self.duration)
        READS.append((self.name, t0, time.monotonic()))
        return 1.0


def overlaps(log: list[tuple[str, float, float]], a: str, b: str) -> int:
    return sum(1 for n1, s1, e1 in log if n1 == a for n2, s2, e2 in log if n2 == b and s1 < e2 and s2 < e1)


def test_sensors_on_one_bus_are_read_one_at_a_time() -> None:
    READS.clear()
    log = READS
    sensors: list[Sensor] = [Probe(name=n, bus_name="/dev/ttyUSB0", interval=0.5) for n in ("m1", "m2", "m3")]
    sensors += [Probe(name=n, interval=0.5) for n in ("free1", "free2")]
    got, _ = collect(sensors, 1.6)
    assert all(len(got[s.name]) >= 2 for s in sensors), {k: len(v) for k, v in got.items()}
    assert overlaps(log, "m1", "m2") == overlaps(log, "m1", "m3") == overlaps(log, "m2", "m3") == 0
    # Without a shared bus, reads run in parallel.
    assert overlaps(log, "free1", "free2") >= 2


class Flaky(Sensor):
    """Fails to open the first `bad_opens` times; counts open and close calls."""

    driver = "flaky"
    bad_opens: int = 2

    def open(self) -> None:
        CALLS["open"] += 1
        if CALLS["open"] <= self.bad_opens:
            raise SensorError("device not found")

    def read(self) -> float:
        return 1.0

    def close(self) -> None:
        CALLS["close"] += 1


def test_a_failed_open_is_retried_with_backoff_then_reads_resume() -> None:
    CALLS.clear()
    got, sched = collect([Flaky(name="f", interval=0.1)], 1.5)
    # Backoff 0.1 s then 0.2 s: the third open succeeds about 0.3 s in.
    assert CALLS["open"] == 3
    assert len(got["f"]) >= 6
    assert sched.states["f"].failures_in_row == 0 and sched.states["f"].last_error is None


def test_failing_reads_back_off_exponentially_and_close_the_driver() -> None:
    _, sched = collect([SimulatedBlocking(name="r", interval=0.1, fault="raise")], 2.0)
    st = sched.states["r"]
    # 0.1 + 0.2 + 0.4 + 0.8 = 1.5 s: about 5 attempts in 2 s instead of 20.
    assert 3 <= st.errors <= 7, st.errors


def test_a_sensor_without_good_readings_is_stale() -> None:
    sensors = [
        Simulated(name="dies", interval=0.1, fault="raise", fault_after=2, stale_after=3),
        Simulated(name="fine", interval=0.1, stale_after=3),
    ]
    _, sched = collect(sensors, 1.0)
    now = time.monotonic()
    assert sched.states["dies"].is_stale(now) and not sched.states["fine"].is_stale(now)
    assert sched.states["dies"].state(now) == "failing"
    health = {(r.tags["sensor"], r.tags["unit"]): r.fields for r in sched.health_readings(1, now)}
    assert health[("dies", "count")]["stale"] is True
    assert health[("fine", "count")]["stale"] is False
    assert health[("fine", "count")]["reads"] >= 8
    assert health[("dies", "count")]["errors"] >= 1


def test_ticks_are_anchored_not_drifting() -> None:
    # Each read takes 40 ms of a 100 ms interval; a sleep-after-read loop would slip to 140 ms per tick.
    class Slow(SimulatedBlocking):
        def read(self) -> dict[str, object]:  # type: ignore[override]
            time.sleep(0.04)
            return super().read()

    got, _ = collect([Slow(name="slow", interval=0.1)], 2.0)
    assert len(got["slow"]) >= 18, len(got["slow"])
