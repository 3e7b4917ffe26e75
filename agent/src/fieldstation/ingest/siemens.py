"""Siemens Insight "Trend Interval Report" CSV: several BMS points side by side, one row per interval.

A report (both dialects Insight writes are read: unquoted with CR-only line ends, UTF-8 BOM and rows padded with
empty cells; or every cell double-quoted with CRLF)::

    Key            Name:Suffix                                Trend Definitions Used,,,,,,,,
    Point_1:,CMC.328.RT,,5 minutes,,,,,
    Point_2:,CMC.328.SP,,5 minutes,,,,,
    Time Interval:,15 Minutes,,,,,,,
    Date Range:,12/26/2017 00:00:00 - 1/2/2018 23:59:59,,,,,,,
    <>Date,Time,Point_1,Point_2
    12/27/2017,0:00:00,25,ON
    1/2/2018,3:30:00,No Data,ON
     ******************************** End of Report *********************************

Several reports concatenated in one file are read one after the other (each footer ends a report; the next
``Point_N:`` block starts another).

Every value becomes one point of measurement ``bms``, field ``value`` (always a float: InfluxDB fixes a field's
type per measurement, and analog and digital points share it), tags ``source`` (the inbox source's name) and
``point`` (the point's name, ``CMC.328.RT``). Dates are ``M/D/YYYY`` and times ``H:MM:SS``, wall-clock time in the
source's ``timezone`` option, else the site's time zone, read by
:class:`~fieldstation.ingest.generic_csv.LocalClock`: in the hour repeated when DST ends, rows are the first pass
until the report steps back in time, then the second pass; a time in the hour skipped when DST starts is skipped.

=========================  ==============================================================================
``ON`` / ``OFF``           1.0 / 0.0 (:data:`STATES`; a source's ``states`` option adds text states, e.g.
                           ``{DAY = 0, NIGHT = 1}``)
``No Data``, ``Data Loss`` the value is skipped, counted under that text (the trend had no sample)
other text                 the value is skipped, counted as ``unknown text value``
empty cell                 the value is skipped, counted as ``empty value``
bad date or time           the row is skipped, ``bad timestamp``
fewer cells than columns   the row is skipped, ``short row``
skipped spring hour        the row is skipped, ``nonexistent local time``
=========================  ==============================================================================

A file without a ``<>Date,Time,...`` row, or whose column row names a ``Point_N`` its header does not define,
is rejected.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import datetime
from typing import BinaryIO

from fieldstation.ingest import FileContext, Rejected, Report
from fieldstation.ingest.generic_csv import LocalClock, number, zone
from fieldstation.ingest.text import open_text
from fieldstation.reading import Reading

MEASUREMENT = "bms"
#: Text states of digital points.
STATES = {"ON": 1.0, "OFF": 0.0}
#: Texts Insight writes when a trend has no sample: skipped, counted under their own name.
NO_SAMPLE = frozenset({"No Data", "Data Loss"})
COLUMNS_MARK = "<>Date"


def _time(date: str, clock_time: str) -> datetime | None:
    try:
        month, day, year = (int(x) for x in date.strip().split("/"))
        hms = [int(x) for x in clock_time.strip().split(":")]
        if len(hms) == 2:
            hms.append(0)
        hour, minute, second = hms
        return datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None


def _states(ctx: FileContext) -> dict[str, float]:
    extra = ctx.options.get("states", {})
    try:
        return {**STATES, **{str(k).strip(): float(v) for k, v in extra.items()}}
    except (AttributeError, TypeError, ValueError) as exc:
        raise Rejected("option states must map text to numbers, e.g. {DAY = 0, NIGHT = 1}") from exc


def parse(stream: BinaryIO, ctx: FileContext, report: Report) -> Iterator[Reading]:
    clock = LocalClock(zone(str(ctx.options.get("timezone") or ctx.timezone)))
    states = _states(ctx)
    # newline="" lets csv see CR, LF and CRLF line ends alike (CR-only is what Insight writes unquoted).
    text = open_text(stream, ctx)
    try:
        yield from _parse(csv.reader(text), ctx, report, clock, states)
    finally:
        text.detach()  # the caller owns (and closes) the binary stream


def _parse(
    rows: Iterator[list[str]], ctx: FileContext, report: Report, clock: LocalClock, states: dict[str, float]
) -> Iterator[Reading]:
    names: dict[str, str] = {}  # Point_N → point name, for the current report
    columns: list[tuple[int, dict[str, str]]] | None = None  # (cell index, tags) per point column; None: in a header
    width = 0
    reports = 0
    blank = True
    for row in rows:
        if not row:
            continue
        blank = blank and not any(cell.strip() for cell in row)
        first = row[0].strip()
        if columns is None:  # header block
            if first.startswith("Point_") and first.endswith(":") and len(row) > 1:
                names[first[:-1]] = row[1].strip()
            elif first == COLUMNS_MARK:
                columns = _columns(row, names, ctx)
                width = max((i for i, _ in columns), default=1) + 1
                reports += 1
            continue
        if first.startswith("*"):  # " ****** End of Report ******": the next report may follow
            columns, names = None, {}
            continue
        report.rows_read += 1
        if len(row) < width:
            report.skip("short row")
            continue
        t = _time(row[0], row[1])
        ns = None if t is None else clock.to_ns(t)
        if ns is None:
            report.skip("bad timestamp" if t is None else "nonexistent local time")
            continue
        for i, tags in columns:
            x = _value(row[i].strip(), states, report)
            if x is not None:
                yield Reading(MEASUREMENT, {"value": x}, dict(tags), ns)
    if blank:
        raise Rejected("empty file")
    if reports == 0:
        raise Rejected(f"no {COLUMNS_MARK},Time,Point_1,... row: not a Siemens Insight trend interval report")


def _columns(row: list[str], names: dict[str, str], ctx: FileContext) -> list[tuple[int, dict[str, str]]]:
    """The ``<>Date,Time,Point_1,...`` row → (cell index, tags) of each point column."""
    cells = [(i, c.strip()) for i, c in enumerate(row) if i >= 2 and c.strip()]
    undefined = [c for _, c in cells if c not in names]
    if undefined:
        raise Rejected(f"column {undefined[0]} is not defined in the report's Point_N header")
    return [(i, {"source": ctx.source, "point": names[c]}) for i, c in cells]


def _value(cell: str, states: dict[str, float], report: Report) -> float | None:
    """A cell's value, or None with the reason counted."""
    x = number(cell)
    if x is None:
        x = states.get(cell)
    if x is None:
        report.skip(cell if cell in NO_SAMPLE else "empty value" if not cell else "unknown text value")
    return x
