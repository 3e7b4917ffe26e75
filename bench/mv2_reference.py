"""The MV2 parser of the setup Fieldstation replaces, rebuilt for comparison: pandas + influxdb-client.

Written from the format's description (``fieldstation/ingest/mv2.py``) the way the old setup worked: the serial
and channel rows read by hand, the data by pandas ``read_csv``, then row by row (``iterrows``) a ``strptime`` of
the time, in the site's zone, and one ``influxdb_client.Point`` per value with its ``to_line_protocol()`` (what
the client's write API does with each point). Tags are Fieldstation's, so the lines compare. Like the old setup
it drops no all-zero rows and no repeated timestamps, and reads the hour repeated when DST ends as one.

Run by ``ingest_bench.py`` in an interpreter that has pandas and influxdb-client (neither is a dependency of
Fieldstation, so they live in a venv of their own; bench/README.md). Prints one JSON object: the best time of
``--runs``, the rows and points, and the first line (to compare with Fieldstation's).

    /tmp/mv2-reference/bin/python bench/mv2_reference.py file.tsv [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any


def header_rows(path: Path) -> int:
    """Lines before the serial row: the V003 JSON block and START_DATA."""
    with path.open(encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f):
            if line.strip() and line.split("\t")[0].strip().isdigit():
                return n
    return 0


def parse(path: Path, client: str, campaign: str, tz: str) -> tuple[int, list[str]]:
    """(rows read, line protocol of every point)."""
    from zoneinfo import ZoneInfo

    import pandas as pd
    from influxdb_client import Point, WritePrecision

    skip = header_rows(path)
    with path.open(encoding="utf-8") as f:
        head = [next(f) for _ in range(skip + 2)][skip:]
    serials, names = (line.rstrip("\n").split("\t") for line in head)
    channels = []
    for serial, name in zip(serials[1:], names[1:], strict=True):
        channel, _, unit = name.strip().rpartition(" ")
        channels.append((serial.strip(), channel or unit, unit if channel else ""))
    zone = ZoneInfo(tz)
    df: Any = pd.read_csv(path, sep="\t", skiprows=skip + 2, header=None)
    lines = []
    for _, row in df.iterrows():
        try:
            when = datetime.strptime(str(row[0]), "%d/%m/%y %H:%M:%S").replace(tzinfo=zone)
        except ValueError:
            continue  # END_DATA, a cut-off line
        ns = int(when.timestamp()) * 10**9
        for i, (serial, channel, unit) in enumerate(channels, start=1):
            try:
                value = float(row[i])
            except (ValueError, KeyError):
                continue
            if math.isnan(value):  # a missing cell
                continue
            point = (
                Point("mv2")
                .field("value", value)
                .time(ns, WritePrecision.NS)
                .tag("campaign", campaign)
                .tag("channel", channel)
                .tag("client", client)
                .tag("device", serial)
                .tag("unit", unit)
            )
            lines.append(point.to_line_protocol())
    return len(df), lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--client", default="bench")
    ap.add_argument("--campaign", default="default")
    ap.add_argument("--timezone", default="Europe/Paris")
    args = ap.parse_args()
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        rows, lines = parse(args.file, args.client, args.campaign, args.timezone)
        times.append(time.perf_counter() - start)
    print(json.dumps({"seconds": min(times), "rows": rows, "points": len(lines), "first": lines[0] if lines else ""}))


if __name__ == "__main__":
    main()
