"""Benchmark of the agent core. Prints figures beside their targets; asserts nothing.

    .venv-3.11/bin/python bench/agent_bench.py            # the full run (about 3 minutes)
    .venv-3.11/bin/python bench/agent_bench.py --quick    # 10 s of sensors, smaller spools

Needs Debian's influxd (apt-get install influxdb): a throwaway server is started on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

from fieldstation.agent import Agent
from fieldstation.influxd import LocalInfluxd
from fieldstation.sensors.simulated import Simulated
from fieldstation.settings import AgentSettings, SinkSettings, SpoolSettings
from fieldstation.sink import SinkWorker
from fieldstation.spool import Spool

BATCH = 5000


class Timed(Simulated):
    """A simulated sensor that records the loop time at which each read starts (for jitter)."""

    async def read(self) -> dict[str, object]:
        STARTS.setdefault(self.name, []).append(asyncio.get_running_loop().time())
        return await super().read()


STARTS: dict[str, list[float]] = {}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def bench_agent(server: LocalInfluxd, work: Path, seconds: float) -> None:
    server.query('CREATE DATABASE "agent"')
    settings = AgentSettings(
        spool=SpoolSettings(path=work / "agent-spool.db"),
        sinks=[SinkSettings(name="local", url=server.url, database="agent")],
        state_file=work / "state.json",
        energy_file=work / "energy.json",
    )
    sensors = [Timed(name=f"s{i:03d}", interval=1.0, signal="sine", period=30) for i in range(100)]
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
        late.extend((t - (origin + k * 1.0)) * 1000 for k, t in enumerate(starts))
    late.sort()
    p50, p99, worst = statistics.median(late), late[int(len(late) * 0.99)], late[-1]
    per_reading = cpu / reads * 1e6
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"100 simulated sensors at 1 Hz for {seconds:g} s through the real Agent (spool + sink to InfluxDB):")
    print(f"  sensor reads                 {reads}")
    print(f"  CPU per reading              {per_reading:8.1f} us    target <= 50 us   {verdict(per_reading <= 50)}")
    print("    (process CPU time, all threads, divided by sensor reads; health readings are extra work)")
    print(f"  RSS now / max                {rss_mb():8.1f} / {maxrss:.1f} MB  target <= 60 MB  {verdict(maxrss <= 60)}")
    print("  schedule jitter (read start minus its ideal tick start + phase + k*interval, loop's monotonic clock):")
    print(f"    p50 {p50:.3f} ms   p99 {p99:.3f} ms   max {worst:.3f} ms   target p99 <= 5 ms  {verdict(p99 <= 5)}")


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
    args = parser.parse_args()
    seconds, n_tp, n_replay = (10.0, 50_000, 36_000) if args.quick else (60.0, 200_000, 360_000)
    print(f"Python {platform.python_version()}, {platform.machine()}, {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory(prefix="fieldstation-bench-") as tmp:
        work = Path(tmp)
        server = LocalInfluxd(work / "influxd").start()
        try:
            bench_agent(server, work, seconds)
            bench_throughput(server, work, n_tp)
            bench_replay(server, work, n_replay)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
