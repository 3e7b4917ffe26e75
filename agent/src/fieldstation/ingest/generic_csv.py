"""Any CSV with one row per instant, read through a column mapping given in the source's options.

The mapping (``options`` of the source in agent.toml, validated by :class:`CsvMapping`)::

    [[ingest.sources]]
    name = "lab"
    format = "csv"
    options.measurement = "lab_bench"
    options.delimiter = ","                      # default ","
    options.timezone = "Europe/Paris"            # default: the site's time zone ([ingest] timezone)
    options.tags = { site = "lab" }
    options.time = { column = "Time", format = "%m/%d %H:%M:%S", year = 2020 }
    options.fields.AnalogIn0 = { field = "ain0", unit = "V" }
    options.fields.Temperature = { field = "temp", unit = "°C" }

``time.format`` is a :func:`~datetime.datetime.strptime` format, ``iso`` (ISO 8601; an offset in the text wins
over the time zone), ``epoch_s`` or ``epoch_ms``. A format without a year takes ``time.year``.

Each row becomes one reading per unit (the house shape: tags ``sensor`` = the source's name unless the mapping
sets it, the mapping's tags, and ``unit``), holding the fields of that unit. What is skipped and counted:

============================  ========================================================================
``missing value``             an empty cell or ``-`` / ``NaN``-like text in a mapped column: that value
``not a number``              any other text in a mapped column: that value
``bad timestamp``             a time cell the format does not read: the row
``short row``                 fewer cells than the header: the row
``nonexistent local time``    a wall-clock time inside the hour skipped when DST starts: the row
============================  ========================================================================

A mapped column missing from the header, or a mapping that does not validate, rejects the whole file.

:class:`LocalClock` turns the naive wall-clock times of a file into UTC; the MV2 and Siemens parsers use it too.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fieldstation.ingest import FileContext, Rejected, Report
from fieldstation.ingest.text import open_text
from fieldstation.reading import FieldValue, Reading

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

#: Cell texts that mean "no value" rather than a bad one.
MISSING = frozenset({"", "-", "--", "nan", "NaN", "NAN", "null", "NULL", "None", "N/A", "n/a"})


def zone(name: str) -> tzinfo:
    """The IANA time zone ``name``; an unknown name rejects the file (it is a configuration error)."""
    if name in ("UTC", "Etc/UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise Rejected(f"unknown time zone {name!r}") from exc


class LocalClock:
    """The wall-clock times of one file, taken in file order, to UTC nanoseconds.

    A local time inside the hour repeated when DST ends is ambiguous. It is read as the first pass (summer
    time, PEP 495 ``fold=0``) until the file steps back in time inside that hour; from there on, as the second
    pass (``fold=1``), until the file leaves the ambiguous hour. Loggers that follow DST write exactly that
    sequence (``02:50`` then ``02:00`` again). A file that starts inside the second pass, or hourly data whose
    two ``02:00`` rows look like one repeated timestamp, cannot be told apart: they are read as the first pass.

    A local time inside the hour skipped when DST starts cannot have been written by a clock that follows DST:
    :meth:`to_ns` returns ``None`` and the caller skips the row (rather than guess an offset and risk overwriting
    the real point an hour later).
    """

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        self._utc = tz is UTC
        self._prev: datetime | None = None  # the previous time, when it was ambiguous
        self._prev_fold = 0

    def to_ns(self, t: datetime) -> int | None:
        if t.tzinfo is not None:  # the text carried its own offset
            return ((t - _EPOCH) // _US) * 1000
        if self._utc:
            return ((t.replace(tzinfo=UTC) - _EPOCH) // _US) * 1000
        first = t.replace(tzinfo=self.tz)
        second = t.replace(tzinfo=self.tz, fold=1)
        off0, off1 = first.utcoffset(), second.utcoffset()
        fold = 0
        if off0 is not None and off1 is not None and off0 != off1:
            if off0 < off1:
                self._prev = None
                return None  # skipped hour (spring forward)
            prev = self._prev
            if prev is not None and (self._prev_fold == 1 or t < prev):
                fold = 1
            self._prev, self._prev_fold = t, fold
        else:
            self._prev = None
        aware = second if fold else first
        return ((aware - _EPOCH) // _US) * 1000


def number(text: str) -> float | None:
    """A finite float from a cell, normalising -0.0 to 0.0; ``None`` when the text is not one."""
    try:
        x = float(text)
    except ValueError:
        return None
    if not math.isfinite(x):
        return None
    return x + 0.0


# -- the mapping -----------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeColumn(_Strict):
    column: str = Field(description="Header of the time column.")
    format: str = Field("iso", description="strptime format, or iso, epoch_s, epoch_ms.")
    year: int | None = Field(None, ge=1970, le=2200, description="Year for a format that has none (%m/%d ...).")


class FieldColumn(_Strict):
    field: str = Field(min_length=1, description="Field name written.")
    unit: str = Field("", description="The unit tag of the reading that carries this field.")


class CsvMapping(_Strict):
    """``options`` of a ``csv`` source: which column is the time, which are fields, with what tags."""

    measurement: str = Field(min_length=1)
    time: TimeColumn
    fields: dict[str, FieldColumn] = Field(min_length=1, description="Header → field and unit.")
    tags: dict[str, str] = Field(default_factory=dict)
    delimiter: str = Field(",", min_length=1, max_length=1)
    timezone: str | None = Field(None, description="Time zone of naive times; default: the site's.")
    encoding: str | None = Field(None, description="Every source's option (checked with the source's settings).")


def mapping(options: dict[str, Any]) -> CsvMapping:
    """Validate a source's options; a bad mapping rejects the file with pydantic's first complaint."""
    try:
        return CsvMapping.model_validate(options)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "options"
        raise Rejected(f"bad column mapping: {where}: {err['msg']}") from exc


def _time_reader(spec: TimeColumn) -> Any:
    fmt = spec.format
    if fmt == "iso":
        return lambda s: datetime.fromisoformat(s.strip())
    if fmt == "epoch_s":
        return lambda s: _EPOCH + timedelta(seconds=float(s))
    if fmt == "epoch_ms":
        return lambda s: _EPOCH + timedelta(milliseconds=float(s))
    if spec.year is not None and "%Y" not in fmt and "%y" not in fmt:
        # Prepending the year avoids strptime's year 1900 (no 29 February) and Python 3.13's warning about
        # day-of-month without a year.
        full, year = f"%Y {fmt}", spec.year
        return lambda s: datetime.strptime(f"{year} {s.strip()}", full)
    return lambda s: datetime.strptime(s.strip(), fmt)  # naive or aware (%z): LocalClock places it


def parse(stream: BinaryIO, ctx: FileContext, report: Report) -> Iterator[Reading]:
    spec = mapping(ctx.options)
    clock = LocalClock(zone(spec.timezone or ctx.timezone))
    read_time = _time_reader(spec.time)
    text = open_text(stream, ctx)
    try:
        rows = csv.reader(text, delimiter=spec.delimiter)
        header = next(rows, None)
        if header is None:
            raise Rejected("empty file")
        header = [h.strip() for h in header]
        missing = [c for c in (spec.time.column, *spec.fields) if c not in header]
        if missing:
            raise Rejected(f"mapped column(s) {', '.join(map(repr, missing))} not in the header")
        t_col = header.index(spec.time.column)
        # (index, field, unit) of each mapped column, and the tags of each unit's reading.
        cols = [(header.index(c), f.field, f.unit) for c, f in spec.fields.items()]
        base = {"sensor": ctx.source, **spec.tags}
        unit_tags = {unit: {**base, "unit": unit} for _, _, unit in cols}
        width = max(t_col, *(i for i, _, _ in cols)) + 1
        for row in rows:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            report.rows_read += 1
            if len(row) < width:
                report.skip("short row")
                continue
            try:
                t = read_time(row[t_col])
            except (ValueError, OverflowError):
                report.skip("bad timestamp")
                continue
            ns = clock.to_ns(t)
            if ns is None:
                report.skip("nonexistent local time")
                continue
            by_unit: dict[str, dict[str, FieldValue]] = {}
            for i, name, unit in cols:
                cell = row[i].strip()
                if cell in MISSING:
                    report.skip("missing value")
                    continue
                x = number(cell)
                if x is None:
                    report.skip("not a number")
                    continue
                by_unit.setdefault(unit, {})[name] = x
            for unit, fields in by_unit.items():
                yield Reading(spec.measurement, fields, dict(unit_tags[unit]), ns)
    finally:
        text.detach()  # the caller owns (and closes) the binary stream
