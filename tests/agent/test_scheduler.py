"""The scheduler: cadence kept whatever other sensors do; buses serialized; failures back off; stale marked."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fieldstation.influxd import LocalInfluxd
from fieldstation.reading import Reading
from fieldstation.scheduler import Scheduler
from fieldstation.sensor import Sensor, SensorError
from fieldstation.sensors.simulated import Simulated, SimulatedBlocking
from harness.agent import fieldstation_cmd, start_agent_process, wait_for
from harness.influx import points, start_influxd


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


class Exits(Sensor):
    """A read that calls sys.exit(), raises an exception that cannot be printed, or returns a broken mapping."""

    how: str

    def read(self) -> object:
        return _misbehave(self.how)


class ExitsAsync(Exits):
    async def read(self) -> object:  # type: ignore[override]
        if self.how.endswith("_waiting"):
            await asyncio.sleep(0.01)  # not inline: the read continues as a Task
        return _misbehave(self.how.removesuffix("_waiting"))


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


class BrokenMapping(dict[str, float]):
    def items(self) -> Any:
        raise RuntimeError("items() failed")


def _misbehave(how: str) -> object:
    if how == "exit":
        raise SystemExit(3)
    if how == "unprintable":
        raise Unprintable
    return BrokenMapping(a=1.0)


@pytest.mark.parametrize("how", ["exit", "unprintable", "broken_mapping"])
def test_a_read_raising_anything_or_returning_junk_is_an_error_and_read_again(how: str) -> None:
    sensors: list[Sensor] = [
        Exits(name="thread", how=how, interval=0.1),
        ExitsAsync(name="inline", how=how, interval=0.1),
        ExitsAsync(name="waiting", how=how + "_waiting", interval=0.1),
        Simulated(name="good", interval=0.1),
    ]
    got, sched = collect(sensors, 1.5)
    assert len(got["good"]) >= 10
    for name in ("thread", "inline", "waiting"):
        st = sched.states[name]
        # Read again at the normal interval or after a backoff: at least the first, the second and the fourth.
        assert st.errors >= 3 and st.last_error, (name, st)
        assert st.state(time.monotonic()) == "failing"
        assert not got[name]


def test_readings_that_cannot_be_stored_are_an_error_not_a_lost_sensor() -> None:
    calls = 0

    def emit(readings: list[Reading]) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("spool refused")

    sched = Scheduler([Simulated(name="a", interval=0.1), SimulatedBlocking(name="b", interval=0.1)], emit)
    with sched.running():
        time.sleep(1.0)
    assert calls >= 16
    for st in sched.states.values():
        assert st.errors >= 8 and st.last_error == "readings not stored: ValueError: spool refused"
        assert st.last_ok is None


# -- hostile returns, against the real agent process (issue 16) -------------------------------------------------

#: What a custom sensor's read() returns, by kind; the limits are in reading.py. Each value is built once, at import,
#: so that the agent's handling of it is measured, not the driver building it.
HOSTILE_CONFIG = """
import asyncio
from fieldstation.sensor import Sensor

HUGE = {f"f{i}": float(i) for i in range(100_000)}
RETURNS = {
    "int_key": {1: 2.0},
    "overflow": 10**400,
    "empty": {},
    "empty_name": {"": 1.0},
    "huge": HUGE,
    "text_26mb": {"note": "x" * 26_000_000},
    "mixed": {"": 1.0, "good": 1.0},
}

class Hostile(Sensor):
    kind: str
    async def read(self):
        return RETURNS[self.kind]

class HostileBlocking(Sensor):
    kind: str
    def read(self):
        return RETURNS[self.kind]

class Healthy(Sensor):
    async def read(self):
        await asyncio.sleep(0)
        return 1.0

class HealthyBlocking(Sensor):
    def read(self):
        return 1.0

healthy = [Healthy(name="{p}async", interval=0.1, measurement="healthy"),
           HealthyBlocking(name="{p}thread", interval=0.1, measurement="healthy")]
hostile = [cls(name=f"{kind}_{how}", kind=kind, interval=0.2, measurement="hostile")
           for kind in RETURNS for how, cls in (("async", Hostile), ("thread", HostileBlocking))]
# At the limits, not over them: stored whole, and processed without holding up the healthy sensors.
LARGE = {"many": {f"f{i}": float(i) for i in range(1000)}, "text": {f"t{i}": "y" * 65536 for i in range(8)}}
class Large(Sensor):
    kind: str
    async def read(self):
        return LARGE[self.kind]
class LargeBlocking(Sensor):
    kind: str
    def read(self):
        return LARGE[self.kind]
large = [cls(name=f"large_{kind}_{how}", kind=kind, interval=0.2 if kind == "many" else 1.0, measurement="large")
         for kind in LARGE for how, cls in (("async", Large), ("thread", LargeBlocking))]
sensors = healthy + (hostile + large if {with_hostile} else [])
"""

#: The one log line each kind gives, in part.
HOSTILE_PROBLEMS = {
    "int_key": "field name 1 is int, not a string",
    "overflow": "beyond a float",
    "empty": "read() returned no fields",
    "empty_name": "field name '' is empty",
    "huge": "read() returned 100000 fields, more than the limit of 1000",
    "text_26mb": "is a string of over 65536 bytes",
    "mixed": "field name '' is empty",
}


def _agent_dir(root: Path, influx_url: str, *, prefix: str, with_hostile: bool) -> Path:
    root.mkdir()
    (root / "config.py").write_text(HOSTILE_CONFIG.replace("{p}", prefix).replace("{with_hostile}", str(with_hostile)))
    (root / "agent.toml").write_text(
        f'config = "{root / "config.py"}"\nstate_file = "{root / "state.json"}"\nhealth_interval = 1\n'
        f'[spool]\npath = "{root / "spool.db"}"\n'
        f'[[sinks]]\nname = "local"\nurl = "{influx_url}"\n'
    )
    return root


def _missed_ticks(stamps: list[int], interval: float) -> int:
    """Ticks without a reading between the first and the last reading."""
    return sum(max(0, round((b - a) / 1e9 / interval) - 1) for a, b in itertools.pairwise(sorted(stamps)))


@dataclass
class HostileRun:
    """Two agents run side by side: one with healthy and hostile sensors, a control with the healthy ones only."""

    first: dict[str, Any]  # the hostile agent's sensors in its state file, at the start and at the end
    last: dict[str, Any]
    shown: dict[str, str]  # sensor -> state, as `fieldstation sensors` shows it
    log: str
    exit_codes: dict[str, int]
    sinks: dict[str, Any]  # the hostile agent's sinks in its state file, after it stopped
    server: LocalInfluxd


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileRun]:
    tmp = tmp_path_factory.mktemp("hostile")
    server = start_influxd(tmp / "influxd")
    try:
        hostile = _agent_dir(tmp / "hostile", server.url, prefix="h_", with_hostile=True)
        control = _agent_dir(tmp / "control", server.url, prefix="c_", with_hostile=False)
        procs = {d: start_agent_process(d / "agent.toml", d / "agent.log") for d in (hostile, control)}
        try:
            wait_for(lambda: all((d / "state.json").exists() for d in procs), 30, "both agents' state files")
            first = json.loads((hostile / "state.json").read_text())["sensors"]
            time.sleep(8)  # both agents, side by side on the same machine
            listing = subprocess.run(
                fieldstation_cmd("sensors", "--settings", str(hostile / "agent.toml")), capture_output=True, text=True
            )
            last = json.loads((hostile / "state.json").read_text())["sensors"]
        finally:
            for proc in procs.values():
                proc.send_signal(signal.SIGTERM)
            codes = {d.name: proc.wait(30) for d, proc in procs.items()}
        shown = {row.split()[0]: row.split()[3] for row in listing.stdout.splitlines()[1:]}
        sinks = json.loads((hostile / "state.json").read_text())["sinks"]
        yield HostileRun(first, last, shown, (hostile / "agent.log").read_text(), codes, sinks, server)
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["async", "thread"])
@pytest.mark.parametrize("kind", list(HOSTILE_PROBLEMS))
def test_a_hostile_return_is_counted_logged_once_and_the_sensor_read_on(
    hostile_run: HostileRun, kind: str, how: str
) -> None:
    name = f"{kind}_{how}"
    first, last = hostile_run.first[name], hostile_run.last[name]
    # Still read: the count grows between two looks. Every read was an error, told in one log line.
    assert last["reads"] >= first["reads"] + 10, (first, last)
    assert last["errors"] >= last["reads"] - 1, last
    assert HOSTILE_PROBLEMS[kind] in (last["last_error"] or ""), last
    lines = [line for line in hostile_run.log.splitlines() if f"sensor {name}:" in line]
    assert len(lines) == 1 and HOSTILE_PROBLEMS[kind] in lines[0] and len(lines[0]) < 400, lines
    # A read with a good field left is stored (ok); one with none is a failing sensor.
    assert hostile_run.shown[name] == ("ok" if kind == "mixed" else "failing"), hostile_run.shown


@pytest.mark.slow
def test_hostile_returns_reach_neither_influxdb_nor_the_log_as_tracebacks(hostile_run: HostileRun) -> None:
    assert hostile_run.exit_codes == {"hostile": 0, "control": 0}, hostile_run.log[-3000:]
    # InfluxDB refused nothing: the sink logs and counts what it refuses.
    assert "Traceback" not in hostile_run.log and "refuse" not in hostile_run.log, hostile_run.log[-3000:]
    local = hostile_run.sinks["local"]
    assert local["write_failures"] == 0 and local.get("dropped_points", 0) == 0 and not local["last_error"], local
    rows = points(hostile_run.server, "hostile")
    assert {r["sensor"] for r in rows} == {"mixed_async", "mixed_thread"}, "only the mixed readings' good field"
    assert all(set(r) - {"time", "sensor", "unit"} == {"good"} for r in rows), rows[:3]
    field_keys = hostile_run.server.rows('SHOW FIELD KEYS FROM "hostile"', "fieldstation")
    assert [k["fieldKey"] for k in field_keys] == ["good"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["async", "thread"])
def test_reads_at_the_limits_are_stored_whole(hostile_run: HostileRun, how: str) -> None:
    rows = points(hostile_run.server, "large")
    many = [r for r in rows if r["sensor"] == f"large_many_{how}"]
    text = [r for r in rows if r["sensor"] == f"large_text_{how}"]
    assert len(many) >= 20 and len(text) >= 4, (len(many), len(text))
    assert all(r[f"f{i}"] == float(i) for r in many for i in range(1000))
    assert all(r[f"t{i}"] == "y" * 65536 for r in text for i in range(8))
    assert hostile_run.last[f"large_many_{how}"]["errors"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("how", ["async", "thread"])
def test_hostile_returns_leave_the_healthy_sensors_cadence_as_in_the_control(hostile_run: HostileRun, how: str) -> None:
    healthy = points(hostile_run.server, "healthy")
    stamps = {p: [int(str(r["time"])) for r in healthy if r["sensor"] == f"{p}{how}"] for p in ("h_", "c_")}
    assert len(stamps["h_"]) >= 50 and len(stamps["c_"]) >= 50, {p: len(s) for p, s in stamps.items()}
    missed = {p: _missed_ticks(s, 0.1) for p, s in stamps.items()}
    assert missed["h_"] <= missed["c_"] + max(3, len(stamps["c_"]) // 20), missed


def test_a_slot_of_sensors_is_one_timer_and_one_emit_per_tick_and_a_slow_one_skips_ticks_alone() -> None:
    """SLOT_SIZE sensors sharing an interval are served by one timer; the readings of those read inline are emitted
    together, once per tick, stamped alike. A sensor whose read must wait runs as a Task, apart from the slot's emit;
    it skips the ticks during which it is still reading, the others keep theirs."""
    from fieldstation.scheduler import SLOT_SIZE

    calls: list[list[Reading]] = []
    lock = threading.Lock()

    def emit(readings: list[Reading]) -> None:
        with lock:
            calls.append(list(readings))

    fast = [Simulated(name=f"f{i:02d}", interval=0.2, signal="constant") for i in range(SLOT_SIZE - 1)]
    slow = Simulated(name="slow", interval=0.2, signal="constant", fault="hang", fault_after=0, timeout=0.5)
    sched = Scheduler([*fast, slow], emit)
    with sched.running():
        wait_for(
            lambda: sum(1 for c in calls if len(c) == SLOT_SIZE - 1) >= 5 and sched.states["slow"].timeouts >= 1,
            20,
            "five ticks of the slot and the slow read's timeout",
        )
    assert len(sched._slots) == 1
    batches = [c for c in calls if len(c) > 1]
    assert batches, calls
    for batch in batches:  # one emit carries every fast sensor of the tick, with one timestamp
        assert sorted(r.tags["sensor"] for r in batch) == sorted(s.name for s in fast)
        assert len({r.time_ns for r in batch}) == 1
    st = sched.states["slow"]
    # The hung read timed out and was counted; the ticks while it hung were skipped, not queued behind it.
    assert st.timeouts >= 1 and st.reads == 0
    assert all(sched.states[s.name].reads >= 5 for s in fast)
