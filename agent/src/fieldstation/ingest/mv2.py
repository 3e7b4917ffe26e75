"""MV2 power-logger exports, formats ``MV_T302_V002`` and ``MV_T302_V003``: tab-separated, one column per channel.

Layout of a file (V003 adds the JSON block; V002 starts at the serial row)::

    START_HEADER
    {"DataTimeSettings":"UTC","TimeZoneName":"Europe/Paris","FileVersion":3,"MasterType":"Tri",...}
    END_HEADER
    START_DATA
    02001171  02001171  02001171  02001171  04000466 ...   the serial of each column (master, then slaves)
    MV_T302_V003  Ph 1 V  Ph 2 V  Ph 3 V  Voie1 W ...      format code, then each channel's name and unit
    03/08/25 03:20:00  242.25  242.26  242.01  163.8 ...   DD/MM/YY HH:MM:SS, then one value per channel
    END_DATA

Times are UTC when the V003 header says ``"DataTimeSettings":"UTC"``; otherwise (V002, or a V003 header without
it) they are wall-clock times in the header's ``TimeZoneName``, else the site's time zone (``ctx.timezone``),
read by :class:`~fieldstation.ingest.generic_csv.LocalClock` (the repeated hour when DST ends is told apart by
the step back in time; a time in the skipped spring hour is skipped).

Every value becomes one point of measurement ``mv2``, field ``value`` (always a float), tags ``client``,
``campaign``, ``device`` (the column's serial in the file), ``channel`` (``Ph 1``, ``Voie3``) and ``unit``
(``V``, ``W``). ``client`` and ``campaign`` come from the path in the inbox,
``mv2/<client>/<campaign>/<serial>/<file>``, or ``mv2/<client>/<serial>/<file>`` with campaign ``default``.

What rows become (each skipped row is counted in the report under its reason):

=========================  ==============================================================================
``clock reset``            the time is in 2020 or earlier, the logger's clock default after a power loss
                           (``01/01/20 01:00:02``), while the file's name dates it later (or carries no
                           date); or the time is more than a day before the previous kept row. Such a time
                           is wrong, and writing it would put a point years away from its real place.
``all channels zero``      every value of the row, voltages included, is exactly 0 (the logger writes
                           ``0 0 0 ...`` when it loses or regains power): with no voltage on any phase the
                           logger was unpowered and measured nothing, so the row is not a measurement.
                           Rows with zero power but a voltage are real and kept.
``duplicate timestamp``    the row has the same time as the row before it: the last one is kept (so the
                           result is the same as writing both; a repeat further apart is written in file
                           order, and InfluxDB keeps the last write for the same series and time).
``truncated line``         fewer columns than the channel row (a last line cut off mid-record).
``too many columns``       more columns than the channel row.
``bad timestamp``          the first column is not ``DD/MM/YY HH:MM:SS``.
``nonexistent local time`` a wall-clock time in the hour skipped when DST starts.
``bad value``              one cell is not a number: only that value is skipped.
=========================  ==============================================================================

Notes in the report (nothing is skipped for them): the folder's serial differs from the master serial in the
file (the device tags follow the file); the V003 ``MasterType`` does not match the number of the master's
voltage channels; ``W`` columns whose values sit within 10 % of the first voltage on 90 % of rows or more, i.e. a
header naming a mono logger whose columns carry phase voltages. Columns are always written as their header
names them: the parser does not guess.

Rejected files: empty, header only, an unsupported format code (``MV_T202_V002``), serial and channel rows of
different lengths, a path without client and serial folders.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, BinaryIO

from fieldstation.ingest import FileContext, Rejected, Report
from fieldstation.ingest.generic_csv import LocalClock, number, zone
from fieldstation.ingest.text import open_text
from fieldstation.reading import Reading, encode_line

MEASUREMENT = "mv2"
SUPPORTED = ("MV_T302_V002", "MV_T302_V003")
DEFAULT_CAMPAIGN = "default"
#: After losing power the logger's clock restarts at 01/01/20: no real row of these formats is that old.
RTC_RESET_YEAR = 2020
DAY_NS = 86_400 * 10**9
#: V003 ``MasterType`` → number of voltage channels of the master.
MASTER_PHASES = {"Mono": 1, "Tri": 3}
#: The logger names its files T302_YYMMDD_HHMMSS[_UTC].tsv.
_FILE_DATE = re.compile(r"(\d{2})(\d{2})(\d{2})_\d{6}")
#: A W column is "voltage-like" when within this fraction of the first voltage on this share of rows.
_VOLTAGE_LIKE = (0.10, 0.90)


def _path_tags(ctx: FileContext) -> tuple[str, str, str]:
    folders = ctx.folders
    if len(folders) == 3:
        return folders[0], folders[1], folders[2]
    if len(folders) == 2:
        return folders[0], DEFAULT_CAMPAIGN, folders[1]
    raise Rejected(f"path {ctx.relpath} is not {ctx.source}/<client>/[<campaign>/]<serial>/<file>")


def _file_year(name: str) -> int | None:
    m = _FILE_DATE.search(name)
    if m is None:
        return None
    yy, mm, dd = (int(g) for g in m.groups())
    return 2000 + yy if 1 <= mm <= 12 and 1 <= dd <= 31 else None


def _time(s: str) -> datetime | None:
    """``DD/MM/YY HH:MM:SS``, sliced rather than strptime'd: this runs once per row of large files."""
    if len(s) != 17 or s[2] != "/" or s[5] != "/" or s[8] != " " or s[11] != ":" or s[14] != ":":
        return None
    try:
        return datetime(2000 + int(s[6:8]), int(s[3:5]), int(s[:2]), int(s[9:11]), int(s[12:14]), int(s[15:]))
    except ValueError:
        return None


def _time_zone(header: dict[str, Any], ctx: FileContext) -> tzinfo:
    if not header:
        return zone(ctx.timezone)
    if str(header.get("DataTimeSettings", "")).upper() == "UTC":
        return UTC
    return zone(str(header.get("TimeZoneName") or ctx.timezone))


def parse(stream: BinaryIO, ctx: FileContext, report: Report) -> Iterator[Reading]:
    """The file's points as readings, in file order."""
    for layout, ns, values in _rows(stream, ctx, report):
        for i, v in enumerate(values):
            if v is not None:
                yield Reading(MEASUREMENT, {"value": v}, dict(layout.tags[i]), ns)


def lines(stream: BinaryIO, ctx: FileContext, report: Report) -> Iterator[tuple[int, list[str]]]:
    """The same points as :func:`parse`, as line protocol: (time in ns, the lines of one row), for the inbox.

    Each column's measurement and tags are encoded once, by :func:`~fieldstation.reading.encode_line` itself; a
    row then costs one format per value (issue 19: a Reading and a tag sort per value were 80 % of the ingest).
    """
    heads: list[str] = []
    for layout, ns, values in _rows(stream, ctx, report):
        if not heads:
            heads = [_head(tags) for tags in layout.tags]
        tail = f" {ns}"
        yield ns, [f"{head}{v!r}{tail}" for head, v in zip(heads, values, strict=True) if v is not None]


def _head(tags: dict[str, str]) -> str:
    """``mv2,<tags> value=``: a column's line up to its value (floats encode as their repr, as to_line does)."""
    return encode_line(MEASUREMENT, tags, {"value": 0.0}, 0).removesuffix("0.0 0")


def _rows(stream: BinaryIO, ctx: FileContext, report: Report) -> Iterator[tuple[_Layout, int, list[float | None]]]:
    """(layout, time in ns, one value per column or None) of every row written, in file order."""
    path_tags = _path_tags(ctx)
    text = open_text(stream, ctx)
    try:
        lines = (line.rstrip("\r\n") for line in text)
        nonblank = (line for line in lines if line.strip())
        layout = _layout(nonblank, path_tags, report)
        file_year = _file_year(ctx.name)
        rows = _Rows(
            width=len(layout.names),
            clock=LocalClock(_time_zone(layout.header, ctx)),
            reset_applies=file_year is None or file_year > RTC_RESET_YEAR,
            report=report,
        )
        volts = _VoltageLike(layout.units)
        # One row is held back: a next row with the same time replaces it (the last one wins).
        pending: tuple[int, list[float | None]] | None = None
        for line in nonblank:
            if line.startswith("END_DATA"):
                break
            row = rows.check(line)
            if row is None:
                continue
            volts.add(row[1])
            if pending is not None:
                if row[0] == pending[0]:
                    report.skip("duplicate timestamp")
                else:
                    yield layout, pending[0], pending[1]
            pending = row
        if pending is not None:
            yield layout, pending[0], pending[1]
        if rows.count == 0:
            raise Rejected("header only: no data rows")
        report.notes.extend(volts.notes(layout))
    finally:
        text.detach()  # the caller owns (and closes) the binary stream


@dataclass(frozen=True)
class _Layout:
    header: dict[str, Any]  # the V003 JSON block, or {}
    names: list[str]  # the channel row: format code, then "Ph 1 V", "Voie1 W", ...
    units: list[str]  # per value column
    tags: list[dict[str, str]]  # per value column


def _layout(nonblank: Iterator[str], path_tags: tuple[str, str, str], report: Report) -> _Layout:
    """Read the header: the optional JSON block, the serial row and the channel row."""
    first = next(nonblank, None)
    if first is None:
        raise Rejected("empty file")
    header: dict[str, Any] = {}
    if first.strip() == "START_HEADER":
        header = _json_header(nonblank)
        first = next((line for line in nonblank if line.strip() != "START_DATA"), "")
    serials = [s.strip() for s in first.split("\t")]
    channel_row = next(nonblank, None)
    if channel_row is None:
        raise Rejected("header only: no channel row and no data")
    names = [n.strip() for n in channel_row.split("\t")]
    if names[0] not in SUPPORTED:
        raise Rejected(f"unsupported format {names[0][:40]!r} (this parser reads {', '.join(SUPPORTED)})")
    if len(serials) != len(names) or len(names) < 2:
        raise Rejected(f"the serial row has {len(serials)} columns and the channel row {len(names)}")

    client, campaign, folder_serial = path_tags
    master = serials[0]
    if folder_serial != master:
        report.notes.append(
            f"folder serial {folder_serial} differs from the master serial {master} in the file: "
            "device tags use the file's serials"
        )
    units, tags = [], []
    for serial, name in zip(serials[1:], names[1:], strict=True):
        channel, _, unit = name.rpartition(" ")
        if not channel:
            channel, unit = unit, ""
        units.append(unit)
        tags.append({"client": client, "campaign": campaign, "device": serial, "channel": channel, "unit": unit})
    master_type = header.get("MasterType")
    master_volts = sum(1 for t in tags if t["device"] == master and t["unit"] == "V")
    if master_type in MASTER_PHASES and MASTER_PHASES[master_type] != master_volts:
        report.notes.append(f"header says MasterType {master_type} but the master has {master_volts} V channel(s)")
    return _Layout(header, names, units, tags)


def _json_header(nonblank: Iterator[str]) -> dict[str, Any]:
    block = []
    for line in nonblank:
        if line.strip() == "END_HEADER":
            break
        block.append(line)
    else:
        raise Rejected("START_HEADER without END_HEADER")
    try:
        header = json.loads("".join(block))
    except ValueError as exc:
        raise Rejected(f"the JSON header does not parse: {exc}") from exc
    if not isinstance(header, dict):
        raise Rejected("the JSON header is not an object")
    return header


class _Rows:
    """Checks the data rows of one file, in order: a row to write, or the reason it is skipped, counted."""

    def __init__(self, *, width: int, clock: LocalClock, reset_applies: bool, report: Report) -> None:
        self.width = width
        self.clock = clock
        self.reset_applies = reset_applies
        self.report = report
        self.count = 0
        self.last_ns: int | None = None  # time of the last row kept
        #: The last hour read with one UTC offset throughout: ("DD/MM/YY HH", ns at HH:00:00, year). Rows are
        #: minutes apart, so most take their time from it instead of a datetime and two tz lookups (issue 19).
        self._hour: tuple[str, int, int] = ("", 0, 0)
        self._clock_saw_dst = False  # the clock's last time was in a DST change hour: it must see the next one

    def check(self, line: str) -> tuple[int, list[float | None]] | None:
        """(time in ns, one value per channel, None where a cell is not a number), or None: skipped."""
        self.count += 1
        self.report.rows_read += 1
        parts = line.split("\t")
        ns = self._when(parts)
        if isinstance(ns, str):
            self.report.skip(ns)
            return None
        values = _numbers(parts, line)
        present = [v for v in values if v is not None] if None in values else values
        if len(present) != len(values):
            self.report.skip("bad value", len(values) - len(present))
        if not present:
            return None
        if not any(present):
            self.report.skip("all channels zero")
            return None
        self.last_ns = ns
        return ns, values

    def _when(self, parts: list[str]) -> int | str:
        """The row's time in ns, or why the row is skipped."""
        if len(parts) != self.width:
            return "truncated line" if len(parts) < self.width else "too many columns"
        s = parts[0]
        hour = self._hour
        seconds = _minutes_seconds(s) if s[:11] == hour[0] and not self._clock_saw_dst else None
        if seconds is None:
            got = self._clocked(s)
            if isinstance(got, str):
                return got
            ns = got
        elif self.reset_applies and hour[2] <= RTC_RESET_YEAR:
            return "clock reset"
        else:
            ns = hour[1] + seconds * 10**9
        if self.last_ns is not None and ns < self.last_ns - DAY_NS:
            return "clock reset"
        return ns

    def _clocked(self, s: str) -> int | str:
        """The time in ns through a datetime and the clock (DST-aware), or why the row is skipped."""
        t = _time(s)
        if t is None:
            return "bad timestamp"
        if self.reset_applies and t.year <= RTC_RESET_YEAR:
            return "clock reset"
        ns = self.clock.to_ns(t)
        if ns is None:
            self._clock_saw_dst = True
            return "nonexistent local time"
        self._clock_saw_dst = not self._one_offset(t)
        if not self._clock_saw_dst:
            self._hour = (s[:11], ns - (t.minute * 60 + t.second) * 10**9, t.year)
        return ns

    def _one_offset(self, t: datetime) -> bool:
        """Whether ``t``'s hour has one UTC offset throughout (no DST change in it): its times need no clock."""
        tz = self.clock.tz
        ends = (t.replace(minute=0, second=0), t.replace(minute=59, second=59))
        return len({end.replace(tzinfo=tz, fold=fold).utcoffset() for end in ends for fold in (0, 1)}) == 1


def _numbers(parts: list[str], line: str) -> list[float | None]:
    """The row's values (``parts[1:]``) as :func:`~fieldstation.ingest.generic_csv.number` reads each cell.

    Every cell at once in the usual case (all finite numbers, no ``-0``), cell by cell otherwise: the same
    result at a third of the cost, which is most of a row's.
    """
    try:
        values: list[float | None] = list(map(float, parts[1:]))
    except ValueError:
        return [number(p) for p in parts[1:]]
    if "-0" in line or not all(map(math.isfinite, values)):  # type: ignore[arg-type]  # floats, not None, here
        return [number(p) for p in parts[1:]]  # -0.0 normalised, inf and nan refused
    return values


def _minutes_seconds(s: str) -> int | None:
    """Seconds past the hour of ``DD/MM/YY HH:MM:SS``, or None where :func:`_time` would not read it."""
    if len(s) != 17 or s[11] != ":" or s[14] != ":":
        return None
    try:
        minute, second = int(s[12:14]), int(s[15:])
    except ValueError:
        return None
    return minute * 60 + second if 0 <= minute < 60 and 0 <= second < 60 else None


class _VoltageLike:
    """Finds W columns that carry phase voltages: within 10 % of the first V column on 90 % of rows or more."""

    def __init__(self, units: list[str]) -> None:
        self.ref = next((i for i, u in enumerate(units) if u == "V"), None)
        self.watts = [i for i, u in enumerate(units) if u == "W"]
        self.near = [0] * len(units)
        self.rows = 0

    def add(self, values: list[float | None]) -> None:
        if self.ref is None or (ref := values[self.ref]) is None or ref <= 100.0:
            return  # no mains voltage on the reference: nothing to compare with
        self.rows += 1
        for i in self.watts:
            v = values[i]
            if v is not None and abs(v - ref) <= _VOLTAGE_LIKE[0] * ref:
                self.near[i] += 1

    def notes(self, layout: _Layout) -> list[str]:
        if self.ref is None or self.rows < 6:
            return []
        like = [i for i in self.watts if self.near[i] >= _VOLTAGE_LIKE[1] * self.rows]
        notes = []
        for device in dict.fromkeys(layout.tags[i]["device"] for i in like):
            cols = ", ".join(layout.names[i + 1] for i in like if layout.tags[i]["device"] == device)
            notes.append(
                f"{device}: {cols} stay within 10% of {layout.names[self.ref + 1]} on {_VOLTAGE_LIKE[1]:.0%} "
                "of rows or more, like phase voltages (a header naming fewer phases than are wired?): written as named"
            )
        return notes
