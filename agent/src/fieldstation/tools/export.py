"""``fieldstation export``: a time range of chosen series to CSV or Parquet, streamed in constant memory.

Columns: ``time`` (RFC 3339 UTC with nanoseconds in CSV, ``timestamp[ns, UTC]`` in Parquet), then the measurement's
tags, then the chosen fields (all by default). Values are written as stored: floats with Python's shortest exact
repr, integers as integers. With ``--every 1m`` each field is its mean per interval (``GROUP BY time(1m)``), numeric
fields only; empty intervals are left out.

The query is streamed (``chunked=true``): InfluxDB sends 10 000 rows at a time and each chunk becomes CSV lines or a
Parquet row group before the next is read. Rows come series by series (one tag set after the other), each in time
order. Progress goes to stderr every few seconds.
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from fieldstation.grafana.queries import ident
from fieldstation.loader import ConfigError
from fieldstation.tools.common import (
    Target,
    TimeRange,
    field_types,
    format_time,
    source,
    stream,
    tag_keys,
    tag_where,
    typed,
)

FORMATS = ("csv", "parquet")
NUMERIC = ("float", "integer")
PROGRESS_EVERY_S = 2.0
ROW_GROUP = 10_000


def plan(
    t: Target,
    measurement: str,
    *,
    rp: str | None,
    fields: list[str],
    tags: dict[str, str],
    span: TimeRange,
    every: str | None,
) -> tuple[str, list[str], dict[str, str]]:
    """(query, tag columns, field → type of its exported values)."""
    types = field_types(t, rp, measurement)
    if not types:
        raise ConfigError(f"{measurement}: no such measurement in database {t.db}{f' (policy {rp})' if rp else ''}")
    unknown = [f for f in fields if f not in types]
    if unknown:
        raise ConfigError(f"{measurement}: no field {unknown[0]!r} (fields: {', '.join(sorted(types))})")
    chosen = fields or sorted(types)
    keys = tag_keys(t, measurement)
    where = f"WHERE {span.where()}{tag_where(tags)}"
    if every:
        if not fields:
            chosen = [f for f in chosen if types[f] in NUMERIC]
        wrong = [f for f in chosen if types[f] not in NUMERIC]
        if wrong:
            raise ConfigError(f"{measurement}.{wrong[0]} is {types[wrong[0]]}: --every averages numbers only")
        if not chosen:
            raise ConfigError(f"{measurement}: no number fields to average")
        select = ", ".join(f"mean({ident(f)}) AS {ident(f)}" for f in chosen)
        group = f"GROUP BY time({every}), * fill(none)"
        out_types = dict.fromkeys(chosen, "float")
    else:
        select = ", ".join(ident(f) for f in chosen)
        group = "GROUP BY *"
        out_types = {f: types[f] for f in chosen}
    q = f"SELECT {select} FROM {source(t.db, rp, measurement)} {where} {group}"  # noqa: S608 -- quoted names
    return q, keys, out_types


def rows(t: Target, q: str, keys: list[str], types: dict[str, str]) -> Iterator[list[list[Any]]]:
    """Batches of rows: [time ns, *tags, *fields], fields typed."""
    fields = list(types)
    for series in stream(t, q, ROW_GROUP):
        tags = series.get("tags", {})
        tag_values = [tags.get(k) or None for k in keys]
        index = {c: i for i, c in enumerate(series["columns"])}
        batch = []
        for v in series.get("values", []):
            vals = [v[index[f]] for f in fields]
            if all(x is None for x in vals):
                continue
            batch.append(
                [
                    int(v[0]),
                    *tag_values,
                    *(None if x is None else typed(x, types[f]) for f, x in zip(fields, vals, strict=True)),
                ]
            )
        if batch:
            yield batch


class Progress:
    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.rows = 0
        self.started = self.last = time.monotonic()

    def add(self, n: int, last_ns: int) -> None:
        self.rows += n
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            print(f"export: {self.rows} rows, at {format_time(last_ns)}", file=self.out, flush=True)


def write_csv(batches: Iterator[list[list[Any]]], header: list[str], out: IO[str], progress: Progress) -> None:
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    for batch in batches:
        last_ns = batch[-1][0]
        for row in batch:
            row[0] = format_time(row[0])
        w.writerows(batch)
        progress.add(len(batch), last_ns)


def write_parquet(
    batches: Iterator[list[list[Any]]], keys: list[str], types: dict[str, str], path: Path, progress: Progress
) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("export --format parquet needs pyarrow: pip install 'fieldstation[export]'") from None
    arrow = {"float": pa.float64(), "integer": pa.int64(), "boolean": pa.bool_(), "string": pa.string()}
    schema = pa.schema(
        [
            pa.field("time", pa.timestamp("ns", tz="UTC"), nullable=False),
            *(pa.field(k, pa.string()) for k in keys),
            *(pa.field(f, arrow[kind]) for f, kind in types.items()),
        ]
    )
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for batch in batches:
                columns = list(zip(*batch, strict=True))
                writer.write_batch(
                    pa.record_batch(
                        [pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)], schema=schema
                    )
                )
                progress.add(len(batch), batch[-1][0])
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def export(
    t: Target,
    measurement: str,
    *,
    rp: str | None,
    fields: list[str],
    tags: dict[str, str],
    span: TimeRange,
    every: str | None,
    fmt: str,
    output: Path | None,
) -> int:
    """Write the export; returns the number of rows."""
    q, keys, types = plan(t, measurement, rp=rp, fields=fields, tags=tags, span=span, every=every)
    progress = Progress(sys.stderr)
    batches = rows(t, q, keys, types)
    if fmt == "parquet":
        if output is None:
            raise ConfigError("export --format parquet: give --output FILE")
        write_parquet(batches, keys, types, output, progress)
    elif output is None:
        write_csv(batches, ["time", *keys, *types], sys.stdout, progress)
        sys.stdout.flush()
    else:
        tmp = output.with_name(f".{output.name}.tmp")
        try:
            with tmp.open("w", encoding="utf-8", newline="") as f:
                write_csv(batches, ["time", *keys, *types], f, progress)
            tmp.replace(output)
        finally:
            tmp.unlink(missing_ok=True)
    return progress.rows
