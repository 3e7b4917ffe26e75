"""Benchmark of the agent core. Prints figures beside their targets; asserts nothing.

    .venv-3.11/bin/python bench/agent_bench.py            # the full run (about 9 minutes)
    .venv-3.11/bin/python bench/agent_bench.py --quick    # 10 s of sensors, smaller spools
    .venv-3.11/bin/python bench/agent_bench.py --only-agent --seconds 30 --sensors 100 1000

CPU per reading (issue 19, Required 1): at 10, 100 and 1000 simulated sensors at 1 Hz, the real Agent (spool, sink
to InfluxDB) beside a bare loop carried here (``BareLoop``: stdlib asyncio, the same SQLite WAL spool committed every
0.5 s with ``synchronous=FULL``, one POST a second), each in its own process, in the same run; the ratio's goal is
≤ 1.5, the jitter p99's the bare loop's. Then the agent's peak RSS with every driver module and the libraries the
drivers open loaded (goal ≤ 40 MB), the spool → InfluxDB throughput and a backlog replay.

Needs Debian's influxd (apt-get install influxdb): a throwaway server is started on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import importlib
import itertools
import json
import math
import pkgutil
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fieldstation.agent import Agent
from fieldstation.influxd import LocalInfluxd
from fieldstation.sensors.simulated import Simulated
from fieldstation.settings import AgentSettings, SinkSettings, SpoolSettings
from fieldstation.sink import SinkWorker
from fieldstation.spool import Spool

BATCH = 5000


class Timed(Simulated):
    """A simulated sensor that records the loop time at which each read starts (for jitter): when its one field's
    signal is computed, the read's first step. As cheap as the bare loop's own record (``loop.time()`` is
    ``time.monotonic()``), so that the ratio measures the agent, not the instrument (wrapping ``read`` in a second
    coroutine cost ~2 µs a reading)."""

    def _signal(self, field_name: str, run: Any) -> float:
        STARTS[self.name].append(time.monotonic())
        return super()._signal(field_name, run)


STARTS: dict[str, list[float]] = {}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# -- the reference: a bare loop with the same durability -------------------------------------------------


@dataclass
class Run:
    """One measurement: which loop, how many sensors, for how long, into which database, with what scratch space."""

    kind: str
    sensors: int
    seconds: float
    url: str
    db: str
    work: Path


class BareLoop:
    """What a hand-written agent does, stdlib only: one asyncio loop reading ``n`` sine "sensors" each second into a
    list of line-protocol strings; every 0.5 s the list goes into an SQLite WAL spool (``synchronous=FULL``, one
    transaction) on a worker thread; once a second the unsent rows are POSTed to ``/write`` and deleted."""

    def __init__(self, run: Run) -> None:
        self.run = run
        host, port = run.url.removeprefix("http://").split(":")
        self.conn = sqlite3.connect(run.work / "bare-spool.db", isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY, line TEXT NOT NULL)")
        self.http = http.client.HTTPConnection(host, int(port), timeout=30)
        self.names = [f"s{i:04d}" for i in range(run.sensors)]
        self.late: list[float] = []
        self.pending: list[str] = []
        self.reads = 0

    def commit(self) -> None:
        batch, self.pending = self.pending, []
        self.conn.execute("BEGIN")
        self.conn.executemany("INSERT INTO spool (line) VALUES (?)", ((x,) for x in batch))
        self.conn.execute("COMMIT")

    def post(self) -> None:
        rows = self.conn.execute("SELECT id, line FROM spool ORDER BY id").fetchall()
        if not rows:
            return
        body = "\n".join(r[1] for r in rows).encode()
        self.http.request("POST", f"/write?db={self.run.db}&precision=ns", body=body)
        resp = self.http.getresponse()
        resp.read()
        if resp.status == 204:
            self.conn.execute("DELETE FROM spool WHERE id <= ?", (rows[-1][0],))

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        disk = ThreadPoolExecutor(max_workers=1)  # the one SQLite connection, used by one thread at a time
        start = loop.time()
        end = start + self.run.seconds

        async def every(period: float, fn: Callable[[], None]) -> None:
            k = 1
            while start + k * period < end:
                await asyncio.sleep(max(0.0, start + k * period - loop.time()))
                await loop.run_in_executor(disk, fn)
                k += 1

        background = [asyncio.create_task(every(0.5, self.commit)), asyncio.create_task(every(1.0, self.post))]
        k = 0
        while start + k < end:
            due = start + k
            await asyncio.sleep(max(0.0, due - loop.time()))
            t_ns = time.time_ns()
            for name in self.names:
                now = loop.time()
                self.late.append((now - due) * 1000)
                value = 20.0 + math.sin(2 * math.pi * (now - start) / 30)
                self.pending.append(f"simulated,sensor={name},unit=K value={value!r} {t_ns}")
                self.reads += 1
            k += 1
        await asyncio.gather(*background)
        await loop.run_in_executor(disk, self.commit)
        await loop.run_in_executor(disk, self.post)
        disk.shutdown()


def bare_loop(run: Run) -> dict[str, float]:
    bare = BareLoop(run)
    cpu0 = time.process_time()
    asyncio.run(bare.main())
    cpu = time.process_time() - cpu0
    bare.conn.close()
    bare.http.close()
    n = run.sensors
    return {"cpu": cpu, "reads": bare.reads, **_jitter([bare.late[i::n] for i in range(n)])}


def _jitter(late_by_sensor: list[list[float]]) -> dict[str, float]:
    """Lateness (read start minus its ideal tick, ms): p50, p99, max; and period jitter (one read's start minus
    the previous one's, minus the interval, ms): its p99. Lateness counts a sensor's constant place in a burst;
    period jitter only how much that place moves from tick to tick."""
    late = sorted(x for one in late_by_sensor for x in one)
    period = sorted(abs(b - a) for one in late_by_sensor for a, b in itertools.pairwise(one))
    return {"p50": statistics.median(late), "p99": late[int(len(late) * 0.99)], "max": late[-1],
            "period_p99": period[int(len(period) * 0.99)] if period else math.nan}


# -- Fieldstation's agent ------------------------------------------------------------------------------


def run_agent(run: Run) -> dict[str, float]:
    work, seconds = run.work, run.seconds
    if run.kind == "every-driver":
        load_every_driver()
    settings = AgentSettings(
        spool=SpoolSettings(path=work / "agent-spool.db"),
        sinks=[SinkSettings(name="local", url=run.url, database=run.db)],
        state_file=work / "state.json",
        energy_file=work / "energy.json",
    )
    sensors = [Timed(name=f"s{i:04d}", interval=1.0, signal="sine", period=30) for i in range(run.sensors)]
    STARTS.update((s.name, []) for s in sensors)
    agent = Agent(settings, sensors)

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        await agent.run(stop)

    cpu0 = time.process_time()
    asyncio.run(main())
    cpu = time.process_time() - cpu0
    reads = sum(st.reads for st in agent.scheduler.states.values())
    start = agent.scheduler._start
    late = []
    for name, starts in STARTS.items():
        origin = start + agent.scheduler.states[name].phase
        late.append([(t - (origin + k * 1.0)) * 1000 for k, t in enumerate(starts)])
    return {"cpu": cpu, "reads": reads, **_jitter(late)}


#: What the drivers import when they open their devices (their modules import these lazily).
DRIVER_LIBRARIES = ("pymodbus.client", "serial.rs485", "Phidget22.Devices.TemperatureSensor", "paho.mqtt.client",
                    "smbus2")


def load_every_driver() -> None:
    """Import every driver module and every library a driver opens, as an agent reading one of each would."""
    import fieldstation.sensors as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"fieldstation.sensors.{module.name}")
    for name in DRIVER_LIBRARIES:
        importlib.import_module(name)


def pss_mb() -> float:
    """Proportional set size: RSS with shared libraries' pages divided among the processes mapping them."""
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(run: Run) -> None:
    """One measurement in this process: its CPU (every thread), reads, jitter and peak RSS, as JSON."""
    out = bare_loop(run) if run.kind == "bare" else run_agent(run)
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["pss_mb"] = pss_mb()
    print(json.dumps(out))


def measure(kind: str, n: int, seconds: float, server: LocalInfluxd, work: Path) -> dict[str, float]:
    db = f"{kind.replace('-', '_')}{n}"
    server.query(f'CREATE DATABASE "{db}"')
    sub = work / f"{kind}-{n}"
    sub.mkdir()
    cmd = [sys.executable, __file__, "--child", kind, "--sensors", str(n), "--seconds", str(seconds),
           "--url", server.url, "--db", db, "--work", str(sub)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def bench_agent(server: LocalInfluxd, work: Path, seconds: float, counts: list[int]) -> None:
    print(f"N simulated sensors at 1 Hz for {seconds:g} s, each in its own process: Fieldstation's Agent (spool +")
    print("sink to InfluxDB) against the bare loop (asyncio, SQLite WAL spool committed every 0.5 s with")
    print("synchronous=FULL, one POST a second). CPU is process time, all threads, per sensor read.")
    print("Late: read start minus its ideal tick, p99; period: a read's start minus the previous one's minus the")
    print("interval, p99 (the jitter the data shows: a sensor's constant place in its slot is not in it).")
    print(f"{'sensors':>8} {'bare us':>9} {'agent us':>9} {'ratio':>6}  goal <= 1.5   "
          f"{'late p99 bare':>13} {'agent':>6} ms  goal agent <= bare   "
          f"{'period p99 bare':>15} {'agent':>6} ms   agent RSS MB")
    for n in counts:
        bare = measure("bare", n, seconds, server, work)
        agent = measure("agent", n, seconds, server, work)
        b_us, a_us = bare["cpu"] / bare["reads"] * 1e6, agent["cpu"] / agent["reads"] * 1e6
        ratio = a_us / b_us
        print(f"{n:>8} {b_us:>9.1f} {a_us:>9.1f} {ratio:>6.2f}  {verdict(ratio <= 1.5):<12} "
              f"{bare['p99']:>13.2f} {agent['p99']:>6.2f}     {verdict(agent['p99'] <= bare['p99']):<19} "
              f"{bare['period_p99']:>15.2f} {agent['period_p99']:>6.2f}      {agent['maxrss_mb']:.1f}")
    every = measure("every-driver", 100, seconds, server, work)
    print(f"agent with every driver module and library loaded, 100 sensors: peak RSS {every['maxrss_mb']:.1f} MB "
          f"(PSS {every['pss_mb']:.1f} MB), goal <= 40 MB  {verdict(every['maxrss_mb'] <= 40)}")


def lines(n: int, t0: int) -> list[str]:
    # Realistic points: 100 sensors, one float field each, ns timestamps 10 ms apart.
    return [
        f"simulated,sensor=s{i % 100:03d},unit=K value={20 + (i % 977) / 1000} {t0 + i * 10_000_000}" for i in range(n)
    ]


def drain(spool: Spool, settings: SinkSettings) -> float:
    worker = SinkWorker(settings, spool)
    t0 = time.perf_counter()
    while worker.drain_once():
        pass
    elapsed = time.perf_counter() - t0
    worker.writer.close()
    return elapsed


def raw_post(server: LocalInfluxd, db: str, points: list[str]) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    t0 = time.perf_counter()
    for i in range(0, len(points), BATCH):
        conn.request("POST", f"/write?db={db}&precision=ns", body="\n".join(points[i : i + BATCH]).encode())
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 204, resp.status
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def bench_throughput(server: LocalInfluxd, work: Path, n: int) -> None:
    points = lines(n, 1_700_000_000_000_000_000)
    server.query('CREATE DATABASE "raw"')
    server.query('CREATE DATABASE "spooled"')
    raw = raw_post(server, "raw", points)
    spool = Spool(work / "throughput.db", sinks=["bench"])
    spool.append(points)
    writer = drain(spool, SinkSettings(name="bench", url=server.url, database="spooled", batch_size=BATCH))
    spool.close()
    raw_rate, writer_rate = n / raw, n / writer
    print(f"spool -> InfluxDB throughput, {n} points in batches of {BATCH}:")
    print(f"  raw HTTP POST of the same lines   {raw_rate:10.0f} points/s")
    print(f"  spool + sink writer               {writer_rate:10.0f} points/s")
    ratio = writer_rate / raw_rate
    print(f"  ratio writer / raw                {ratio:10.2f}       target >= 0.7  {verdict(ratio >= 0.7)}")


def bench_replay(server: LocalInfluxd, work: Path, n: int) -> None:
    server.query('CREATE DATABASE "replay"')
    spool = Spool(work / "replay.db", sinks=["bench"])
    for i in range(0, n, 50):  # committed as the agent does: many small transactions while the sink was down
        spool.append(lines(50, 1_800_000_000_000_000_000 + i * 10_000_000))
    elapsed = drain(spool, SinkSettings(name="bench", url=server.url, database="replay", batch_size=BATCH))
    spool.close()
    hours = n / 100 / 3600
    print(f"replay of a {hours:g}-hour backlog at 100 readings/s ({n} points):")
    print(f"  drained in {elapsed:.1f} s                      target <= 30 s  {verdict(elapsed <= 30)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 s of sensors, smaller spools")
    parser.add_argument("--sensors", type=int, nargs="*", default=[10, 100, 1000], help="sensor counts")
    parser.add_argument("--only-agent", action="store_true", help="skip the throughput and replay figures")
    parser.add_argument("--seconds", type=float, help="length of each sensor run (default 60, --quick 10)")
    parser.add_argument("--child", choices=["bare", "agent", "every-driver"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Run(args.child, args.sensors[0], args.seconds, args.url, args.db, args.work))
        return
    seconds, n_tp, n_replay = (10.0, 50_000, 36_000) if args.quick else (60.0, 200_000, 360_000)
    seconds = args.seconds or seconds
    print(f"Python {platform.python_version()}, {platform.machine()}, {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory(prefix="fieldstation-bench-") as tmp:
        work = Path(tmp)
        server = LocalInfluxd(work / "influxd").start()
        try:
            bench_agent(server, work, seconds, args.sensors)
            if not args.only_agent:
                bench_throughput(server, work, n_tp)
                bench_replay(server, work, n_replay)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
