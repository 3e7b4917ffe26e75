"""File-drop ingestion speed: the 11 293-row MV2 export through the inbox's parser, the old setup's, and into InfluxDB.

It times, best of several runs each:

- **lines**: ``mv2.lines``, what the inbox runs: each column's tags encoded once, one line per value (time zone
  Europe/Paris, so every row goes through DST-aware local time);
- **parse + to_line**: ``mv2.parse`` and ``Reading.to_line`` of every reading, the general path other parsers take;
- **parse only**: ``mv2.parse`` without encoding;
- **floor**: the ``csv`` module splitting the same file's rows on tabs and ``float()`` of every value, with no
  timestamps, checks or readings: the least any Python parser of this file can cost;
- **reference**: the setup Fieldstation replaces, rebuilt in ``mv2_reference.py`` (pandas ``read_csv``, one
  ``influxdb_client.Point`` per value), run in ``--reference-python``, an interpreter that has pandas and
  influxdb-client (not Fieldstation's dependencies; bench/README.md). Goal (issue 19): ``lines`` ≥ 10× faster;

then, with ``--influxd`` (Debian's influxd on PATH), a throwaway InfluxDB on loopback and:

- **raw POST**: the file's lines POSTed 5 000 a request (the sink's batch size) to ``/write``;
- **dropped file**: the real Agent (inbox, spool, sink) with the file written as ``<name>.part`` and renamed into
  the inbox, timed from the rename until InfluxDB counts every point (polled every 20 ms), with the sink's
  shipped ``flush_interval`` (1 s) and with 0.05 s, which shows what the sink's wait between polls costs. Goal:
  within 2× the raw POST.

It prints rows/s and points/s, the ratios and the parser's peak traced memory. It asserts nothing.

    .venv-3.11/bin/python bench/ingest_bench.py [--reference-python PY] [--influxd] [file.tsv]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from fieldstation.ingest import FileContext, Report, mv2

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"  # copies of the shared fixtures
DEFAULT = FIXTURES / "powerview/data/0_camp_base/02001283/parsed/T302_02001283_T302_260108_214031.tsv"
REFERENCE = Path(__file__).with_name("mv2_reference.py")
RUNS = 5
BATCH = 5000  # the sink's default batch_size
#: Where the file goes in the inbox: source mv2, client bench, campaign default, the master's serial.
REL = PurePosixPath("mv2/bench/default/02001283")


def _ctx(path: Path) -> FileContext:
    return FileContext(REL / path.name, timezone="Europe/Paris")


def run_lines(path: Path) -> tuple[int, int]:
    """(rows, points) through mv2.lines, what the inbox runs."""
    report = Report()
    points = 0
    with path.open("rb") as f:
        for _, lines in mv2.lines(f, _ctx(path), report):
            points += len(lines)
    return report.rows_read, points


def run_parser(path: Path, encode: bool = True) -> tuple[int, int]:
    """(rows, points) through mv2.parse and to_line."""
    report = Report()
    points = 0
    with path.open("rb") as f:
        for reading in mv2.parse(f, _ctx(path), report):
            if encode:
                reading.to_line()
            points += 1
    return report.rows_read, points


def run_parse_only(path: Path) -> tuple[int, int]:
    return run_parser(path, encode=False)


def run_floor(path: Path) -> tuple[int, int]:
    """(rows, values) with the csv module alone: split rows, float() each value."""
    rows = values = 0
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t"):
            if not row or not row[0][:1].isdigit() or "/" not in row[0]:
                continue  # the serial and channel rows
            rows += 1
            for cell in row[1:]:
                float(cell)
                values += 1
    return rows, values


def best(fn: Callable[[Path], tuple[int, int]], path: Path) -> tuple[float, int, int]:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        rows, points = fn(path)
        times.append(time.perf_counter() - start)
    return min(times), rows, points


def reference(python: str, path: Path) -> tuple[float, int, int] | None:
    """(best seconds, rows, points) of the pandas + influxdb-client parser, or None (printed why)."""
    result = subprocess.run(
        [python, str(REFERENCE), str(path), "--runs", str(RUNS)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        print(f"  reference: {python} failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
        return None
    got = json.loads(result.stdout)
    return got["seconds"], got["rows"], got["points"]


def file_lines(path: Path) -> list[str]:
    with path.open("rb") as f:
        return [line for _, lines in mv2.lines(f, _ctx(path), Report()) for line in lines]


def raw_post(port: int, db: str, lines: list[str]) -> float:
    """Seconds to POST ``lines`` to /write, BATCH a request, on one connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    start = time.perf_counter()
    for i in range(0, len(lines), BATCH):
        conn.request("POST", f"/write?db={db}&rp=files&precision=ns", body="\n".join(lines[i : i + BATCH]).encode())
        resp = conn.getresponse()
        resp.read()
        if resp.status != 204:
            raise RuntimeError(f"InfluxDB answered {resp.status}")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def drop_into_agent(
    server: Any, work: Path, path: Path, n: int, flush_interval: float
) -> tuple[float, float | None, int]:
    """(seconds from the rename until InfluxDB counts ``n`` points, seconds until the file was archived, count)."""
    from fieldstation.agent import Agent
    from fieldstation.ingest.inbox import IngestSettings, SourceSettings
    from fieldstation.settings import AgentSettings, SinkSettings, SpoolSettings

    db = f"dropped_{len(list(work.glob('agent-*')))}"
    server.query(f'CREATE DATABASE "{db}"')
    server.query(f'CREATE RETENTION POLICY "files" ON "{db}" DURATION INF REPLICATION 1')
    home = work / f"agent-{db}"
    ingest = IngestSettings(
        root=home / "data", timezone="Europe/Paris", sources=[SourceSettings(name="mv2", format="mv2")]
    )
    settings = AgentSettings(
        spool=SpoolSettings(path=home / "spool.db"),
        sinks=[SinkSettings(name="local", url=server.url, database=db, flush_interval=flush_interval)],
        state_file=home / "state.json",
        energy_file=home / "energy.json",
        ingest=ingest,
    )
    dest = ingest.inbox / REL / path.name
    dest.parent.mkdir(parents=True, exist_ok=True)  # the logger's folder, there since its first upload
    agent = Agent(settings, [])
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    runner = threading.Thread(target=loop.run_until_complete, args=(agent.run(stop),), daemon=True)
    runner.start()
    time.sleep(1.0)  # the inbox's watcher is up
    part = dest.with_name(dest.name + ".part")
    shutil.copyfile(path, part)  # an upload in progress
    archived = ingest.archive / REL / (path.name + ".report.json")
    spooled = None
    count = 0
    start = time.perf_counter()
    part.rename(dest)  # complete
    while count < n and time.perf_counter() - start < 120:
        time.sleep(0.02)
        if spooled is None and archived.exists():
            spooled = time.perf_counter() - start
        rows = server.query('SELECT count("value") FROM "files"."mv2"', db)
        series = rows[0].get("series") if rows else None
        count = series[0]["values"][0][1] if series else 0
    dropped = time.perf_counter() - start
    loop.call_soon_threadsafe(stop.set)
    runner.join(60)
    return dropped, spooled, count


def bench_influxd(path: Path) -> None:
    """Raw POST of the file's points beside the same file dropped into a running Agent's inbox."""
    from fieldstation.influxd import LocalInfluxd

    lines = file_lines(path)
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        work = Path(tmp)
        server = LocalInfluxd(work / "influxd").start()
        try:
            server.query('CREATE DATABASE "raw"')
            server.query('CREATE RETENTION POLICY "files" ON "raw" DURATION INF REPLICATION 1')
            raw = raw_post(server.http_port, "raw", lines)
            # The shipped flush interval, then one short enough to show what the sink's wait between polls costs.
            drops = {fi: drop_into_agent(server, work, path, len(lines), fi) for fi in (1.0, 0.05)}
        finally:
            server.stop()
    print(f"\n  InfluxDB on loopback, {len(lines)} points, {BATCH} a POST:")
    print(f"  raw POST            {raw * 1e3:8.1f} ms")
    for fi, (dropped, spooled, count) in drops.items():
        archived = f"archived after {spooled * 1e3:.0f} ms" if spooled is not None else "not archived"
        verdict = "PASS" if dropped <= 2 * raw and count == len(lines) else "MISS"
        print(
            f"  dropped file        {dropped * 1e3:8.1f} ms  {dropped / raw:4.1f}× the raw POST, goal ≤ 2× {verdict}"
            f"  (sink flush_interval {fi:g} s; {archived}; InfluxDB counts {count})"
        )
    print("    (from the rename of <file>.part in the inbox of a running Agent until InfluxDB counts every point)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--reference-python", help="a Python with pandas and influxdb-client, for the old parser")
    ap.add_argument("--influxd", action="store_true", help="also time raw POST and a dropped file into InfluxDB")
    args = ap.parse_args()
    path = args.file
    print(f"{path.name}: {path.stat().st_size / 1e6:.2f} MB, Python {sys.version.split()[0]}, best of {RUNS}")
    runs = (("lines", run_lines), ("parse+line", run_parser), ("parse only", run_parse_only), ("floor", run_floor))
    results = {name: best(fn, path) for name, fn in runs}
    if args.reference_python:
        ref = reference(args.reference_python, path)
        if ref is not None:
            results["reference"] = ref
    for name, (secs, rows, points) in results.items():
        print(
            f"  {name:10} {secs * 1e3:8.1f} ms  {rows / secs:10,.0f} rows/s  {points / secs:10,.0f} points/s"
            f"  ({rows} rows, {points} points)"
        )
    for name in ("lines", "parse+line", "parse only"):
        secs, _, points = results[name]
        print(f"  {name} / floor: {secs / results['floor'][0]:.1f}× the time, {secs / points * 1e6:.2f} µs/point")
    if "reference" in results:
        speedup = results["reference"][0] / results["lines"][0]
        print(f"  reference / lines: {speedup:.1f}× faster  goal ≥ 10×  {'PASS' if speedup >= 10 else 'MISS'}")
        print("    (the reference, like the old setup, keeps all-zero rows and repeated timestamps: more points)")
    tracemalloc.start()
    run_lines(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"  lines peak traced memory: {peak / 1024:.0f} KiB (the file is {path.stat().st_size / 1024:.0f} KiB)")
    if args.influxd:
        bench_influxd(path)


if __name__ == "__main__":
    main()
