"""File-drop ingestion speed: the 11 293-row MV2 export through ``mv2.parse`` and line encoding.

It times, best of several runs each:

- **parser**: ``mv2.parse`` from an open file plus ``Reading.to_line`` of every reading, which is what the inbox
  does before spooling (time zone Europe/Paris, so every row goes through DST-aware local time);
- **parse only**: the same without ``to_line``, to show what line encoding costs;
- **floor**: the ``csv`` module splitting the same file's rows on tabs and ``float()`` of every value, with no
  timestamps, checks or readings: the least any Python parser of this file can cost;

and prints rows/s and points/s of both, the ratio, and the parser's peak traced memory. It asserts nothing.

    .venv-3.11/bin/python bench/ingest_bench.py [file.tsv]
"""

from __future__ import annotations

import csv
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from fieldstation.ingest import FileContext, Report, mv2

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"  # copies of the shared fixtures
DEFAULT = FIXTURES / "powerview/data/0_camp_base/02001283/parsed/T302_02001283_T302_260108_214031.tsv"
RUNS = 5


def run_parser(path: Path, encode: bool = True) -> tuple[int, int]:
    """(rows, points) through mv2.parse and to_line."""
    report = Report()
    ctx = FileContext(PurePosixPath("mv2/bench/default/02001283", path.name), timezone="Europe/Paris")
    points = 0
    with path.open("rb") as f:
        for reading in mv2.parse(f, ctx, report):
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


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    print(f"{path.name}: {path.stat().st_size / 1e6:.2f} MB, Python {sys.version.split()[0]}, best of {RUNS}")
    runs = (("parser", run_parser), ("parse only", run_parse_only), ("floor", run_floor))
    results = {name: best(fn, path) for name, fn in runs}
    for name, (secs, rows, points) in results.items():
        print(
            f"  {name:10} {secs * 1e3:8.1f} ms  {rows / secs:10,.0f} rows/s  {points / secs:10,.0f} points/s"
            f"  ({rows} rows, {points} points)"
        )
    for name in ("parser", "parse only"):
        secs, _, points = results[name]
        print(f"  {name} / floor: {secs / results['floor'][0]:.1f}× the time, {secs / points * 1e6:.2f} µs/point")
    tracemalloc.start()
    run_parser(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"  parser peak traced memory: {peak / 1024:.0f} KiB (the file is {path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
