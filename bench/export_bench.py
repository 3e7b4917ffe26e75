"""Export speed and memory: ``fieldstation export`` of a growing time range, CSV and Parquet.

Seeds a throwaway InfluxDB (Debian's influxd, loopback) with one measurement of 4 series (three float fields and an
integer, tags sensor and unit, one point per series every 10 s), then for each size exports the whole range in a
child process and prints rows, seconds, rows/s and the child's peak RSS. If the export streams, the peak RSS stays
flat as the range grows (it would grow with it if the result were held in memory). It asserts nothing.

    .venv-3.11/bin/python bench/export_bench.py [rows per series ...]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fieldstation.influxd import LocalInfluxd
from fieldstation.influxql import Influx

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
SERIES = 4
CHILD = (
    "import resource, sys\n"
    "from fieldstation.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def seed(server: LocalInfluxd, per_series: int, done: int) -> None:
    client = Influx(server.url)
    batch: list[str] = []
    for i in range(done, per_series):
        t = T0 + i * 10 * 10**9
        for s in range(SERIES):
            batch.append(
                f"bench,sensor=s{s},unit=W a={i * 0.1 + s!r},b={i * 0.01!r},c={(i % 97) * 1.5!r},n={i}i {t}"
            )
        if len(batch) >= 20_000:
            client.write(batch, "fieldstation")
            batch = []
    if batch:
        client.write(batch, "fieldstation")


def export(server: LocalInfluxd, out: Path, per_series: int) -> tuple[float, int]:
    end = T0 + per_series * 10 * 10**9
    args = [
        "export",
        "bench",
        "--url",
        server.url,
        "--db",
        "fieldstation",
        "--start",
        str(T0),
        "--end",
        str(end),
    ]
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args, "-o", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed = time.perf_counter() - t0
    return elapsed, int(done.stderr.strip().splitlines()[-1])


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [25_000, 100_000, 250_000]
    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        server = LocalInfluxd(Path(tmp) / "influxd").start()
        try:
            server.query('CREATE DATABASE "fieldstation"')
            print(
                f"{'rows':>9} {'format':<8} {'seconds':>8} {'rows/s':>9} {'peak RSS MB':>12} {'file MB':>8}"
            )
            seeded = 0
            for per_series in sorted(sizes):
                seed(server, per_series, seeded)
                seeded = per_series
                rows = per_series * SERIES
                for fmt in ("csv", "parquet"):
                    out = Path(tmp) / f"bench.{fmt}"
                    elapsed, rss_kb = export(server, out, per_series)
                    size = out.stat().st_size / 1e6
                    print(
                        f"{rows:>9} {fmt:<8} {elapsed:>8.2f} {rows / elapsed:>9.0f} {rss_kb / 1024:>12.1f} {size:>8.1f}"
                    )
                    out.unlink()
        finally:
            server.cleanup()


if __name__ == "__main__":
    main()
