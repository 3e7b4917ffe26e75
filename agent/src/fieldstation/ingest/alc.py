"""BMS point descriptions: ALC (Automated Logic WebCTRL) point exports and Siemens Insight "Point Definition" reports.

These files describe points (where they are, what program runs them, their type, units, slope and intercept);
they carry no time series. Each described point becomes one point of measurement ``bms_point`` holding its
description as fields, so a Grafana table or a query (``SELECT last(*) FROM bms_point GROUP BY *``) can show what
a ``bms`` series is, and in what unit, next to its values.

Time: the UTC midnight of the day the file is ingested, the same for every point of the file. A fixed instant
(1970) would make every ingest overwrite the last, but InfluxDB refuses points older than a retention policy's
duration, and the raw policy keeps 35 days by default: they would never be stored. Midnight of the ingest day
keeps re-ingesting idempotent within a day (the same series and time are overwritten), keeps one snapshot per
day a description changed, and ``last()`` reads the current one. As raw points they expire with the raw policy:
drop the export again when it changes, and at least once per retention period to keep it visible.

ALC (``Location,Control Program,Name,Type,Offset / Polarity,Exp:Num,I/O Type``, every cell quoted): tags
``system=alc``, ``location``, ``program``, ``point`` (the Name); string fields from :data:`ALC_FIELDS`, empty
cells left out. Names repeat across programs (``Setpoint``, ``OAT``), hence the program tag.

Siemens Point Definition (blocks of ``"Key:","value"[,"Key2:","value2"]`` rows, each ended by a row of
asterisks): tags ``system=siemens``, ``point`` (``Point Name``, as the trend reports name it); fields from
:data:`SIEMENS_FIELDS` (slope, intercept, COV limit, wire resistance and decimal places as floats, the rest as
strings); the text table's states as one string field ``states`` (``0 - OFF; 1 - ON``). Placeholders
(``<Undefined>``, ``<< No Text Defined >>``) and empty values are left out; keys not in the table are listed in a
report note.

==========================  ===========================================================================
``duplicate point``         a row or block naming a point already read in this file: the first is kept
                            (the ALC export lists placeholder points named ``point name`` several times)
``short row``               an ALC row with fewer cells than the header
``block without a name``    a Siemens block without ``Point Name:``
==========================  ===========================================================================

A file that is neither (its first row is not the ALC header nor a Siemens ``Key:`` row) is rejected.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from typing import BinaryIO

from fieldstation.ingest import FileContext, Rejected, Report
from fieldstation.ingest.generic_csv import number
from fieldstation.ingest.text import open_text
from fieldstation.reading import FieldValue, Reading, now_ns

MEASUREMENT = "bms_point"
DAY_NS = 86_400 * 10**9

#: ALC header → tag.
ALC_TAGS = {"Location": "location", "Control Program": "program", "Name": "point"}
#: ALC header → string field.
ALC_FIELDS = {"Type": "type", "Offset / Polarity": "polarity", "Exp:Num": "exp_num", "I/O Type": "io_type"}

#: Siemens key (without its colon) → (field, is a number).
SIEMENS_FIELDS: dict[str, tuple[str, bool]] = {
    "Point System Name": ("system_name", False),
    "Point Type": ("type", False),
    "Object Name": ("object_name", False),
    "Object ID": ("object_id", False),
    "Classification": ("classification", False),
    "Descriptor": ("description", False),
    "Panel Name": ("panel", False),
    "Point Address": ("address", False),
    "Sensor Type": ("sensor_type", False),
    "Actuator Type": ("actuator_type", False),
    "Slope": ("slope", True),
    "Intercept": ("intercept", True),
    "COV Limit": ("cov_limit", True),
    "Wire Resistance": ("wire_resistance", True),
    "Engineering Units": ("units", False),
    "Analog Representation": ("representation", False),
    "# of decimal places": ("decimals", True),
    "Text Table": ("text_table", False),
    "Initial Value": ("initial_value", False),
    "Relinquish Default": ("relinquish_default", False),
    "Totalization": ("totalization", False),
    "Initial Priority": ("initial_priority", False),
    "Auto Unbundled": ("auto_unbundled", False),
    "Modified from Default": ("modified_from_default", False),
    "Graphic Name": ("graphic", False),
    "Informational Text": ("info", False),
    "Alarm Type": ("alarm_type", False),
}
SIEMENS_NAME = "Point Name"
PLACEHOLDERS = frozenset({"", "<Undefined>", "<< No Text Defined >>"})
_STATE = re.compile(r"^\s+(\d+\s+-\s+.*\S)\s*$")


def snapshot_ns() -> int:
    """UTC midnight of today, in nanoseconds: the time of every point of a file ingested today."""
    return now_ns() // DAY_NS * DAY_NS


def parse(stream: BinaryIO, ctx: FileContext, report: Report) -> Iterator[Reading]:
    text = open_text(stream, ctx)
    try:
        rows = (row for row in csv.reader(text) if any(cell.strip() for cell in row))
        first = next(rows, None)
        if first is None:
            raise Rejected("empty file")
        head = [c.strip() for c in first]
        if all(h in head for h in (*ALC_TAGS, "Type")):
            yield from _alc(head, rows, report, snapshot_ns())
        elif head[0].rstrip(":") in SIEMENS_FIELDS or head[0].rstrip(":") == SIEMENS_NAME:
            yield from _siemens(first, rows, report, snapshot_ns())
        else:
            raise Rejected(f"first row {head[0][:40]!r} is neither the ALC export's nor a Siemens point definition's")
    finally:
        text.detach()  # the caller owns (and closes) the binary stream


def _alc(head: list[str], rows: Iterator[list[str]], report: Report, ns: int) -> Iterator[Reading]:
    tag_cols = [(head.index(h), tag) for h, tag in ALC_TAGS.items()]
    field_cols = [(head.index(h), f) for h, f in ALC_FIELDS.items() if h in head]
    seen: set[tuple[str, ...]] = set()
    for row in rows:
        report.rows_read += 1
        if len(row) < len(head):
            report.skip("short row")
            continue
        cells = [c.strip() for c in row]
        tags = {"system": "alc", **{tag: cells[i] for i, tag in tag_cols}}
        key = tuple(tags.values())
        if key in seen:
            report.skip("duplicate point")
            continue
        seen.add(key)
        fields: dict[str, FieldValue] = {f: cells[i] for i, f in field_cols if cells[i]}
        if not fields:
            report.skip("no description")
            continue
        yield Reading(MEASUREMENT, fields, tags, ns)


def _siemens(first: list[str], rows: Iterator[list[str]], report: Report, ns: int) -> Iterator[Reading]:
    seen: set[str] = set()
    unknown: dict[str, None] = {}
    block: list[list[str]] = [first]

    def point(block: list[list[str]]) -> Reading | None:
        report.rows_read += 1
        name = None
        fields: dict[str, FieldValue] = {}
        states = []
        for row in block:
            if len(row) == 1 and (m := _STATE.match(row[0])):
                states.append(re.sub(r"\s+-\s+", " - ", m.group(1)))
                continue
            for key, value in _pairs(row):
                if key == SIEMENS_NAME:
                    name = value
                elif key in SIEMENS_FIELDS:
                    fname, is_number = SIEMENS_FIELDS[key]
                    if value in PLACEHOLDERS:
                        continue
                    x = number(value) if is_number else None
                    fields[fname] = x if x is not None else value
                elif key:
                    unknown[key] = None
        if states:
            fields["states"] = "; ".join(states)
        if not name:
            report.skip("block without a name")
            return None
        if name in seen:
            report.skip("duplicate point")
            return None
        seen.add(name)
        if not fields:
            report.skip("no description")
            return None
        return Reading(MEASUREMENT, fields, {"system": "siemens", "point": name}, ns)

    for row in rows:
        if row[0].strip().startswith("*"):  # the row of asterisks that ends a block (and the report)
            if block and (reading := point(block)) is not None:
                yield reading
            block = []
            continue
        block.append(row)
    if block and (reading := point(block)) is not None:  # a last block without its row of asterisks
        yield reading
    if unknown:
        report.notes.append(f"keys not in the table, ignored: {', '.join(unknown)}")


def _pairs(row: list[str]) -> list[tuple[str, str]]:
    """``"Key:","value"[,"Key2:","value2"]`` → pairs; a further cell without a key continues the value
    (``"Panel Name:","MBC03"," (SS.PXCM03)"``)."""
    pairs = []
    i = 0
    while i < len(row):
        key = row[i].strip().rstrip(":")
        value = row[i + 1].strip() if i + 1 < len(row) else ""
        i += 2
        while i < len(row) and row[i].strip() and not row[i].strip().endswith(":"):
            value = f"{value} {row[i].strip()}"
            i += 1
        pairs.append((key, value))
    return pairs
