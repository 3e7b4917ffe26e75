"""Siemens Insight trend interval reports: both dialects, No Data, ON/OFF, local time across DST, rejections."""

from __future__ import annotations

import inspect
import io
import itertools
import re
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from fieldstation.ingest import FileContext, Rejected, Report, siemens
from fieldstation.reading import Reading

FIXTURES = Path(__file__).parents[2] / "fixtures"  # copies of the shared fixtures (tests/fixtures/SOURCES.md)
EVANS = FIXTURES / "energycomps" / "value-pipeline" / "tests" / "EvansTestFile.csv"
TZ = "America/Chicago"  # Carleton College, Northfield MN


def parse_bytes(data: bytes, tz: str = TZ, **options: Any) -> tuple[list[Reading], Report]:
    report = Report()
    ctx = FileContext(PurePosixPath("siemens/report.csv"), timezone=tz, options=options)
    return list(siemens.parse(io.BytesIO(data), ctx, report)), report


def utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 10**9


def quoted_crlf(original: bytes) -> bytes:
    """The other dialect Insight writes: every cell double-quoted, CRLF line ends (same BOM, same cells)."""
    bom = b"\xef\xbb\xbf"
    text = original.removeprefix(bom).decode()
    lines = [",".join(f'"{cell}"' for cell in line.split(",")) for line in text.split("\r")]
    return bom + "\r\n".join(lines).encode() + b"\r\n"


def report_text(rows: list[str], points: tuple[str, ...] = ("AHU1.SAT", "AHU1.FAN")) -> bytes:
    head = [f"Point_{i}:,{name},,15 minutes" for i, name in enumerate(points, 1)]
    cols = ",".join(f"Point_{i}" for i in range(1, len(points) + 1))
    footer = " ******************************** End of Report *********************************"
    return "\r".join([*head, "Time Interval:,15 Minutes", f"<>Date,Time,{cols}", *rows, footer]).encode()
def test_the_real_report_parses() -> None:
    readings, report = parse_bytes(EVANS.read_bytes())
    assert report.rows_read == 5
    assert len(readings) == 29
    assert dict(report.skipped) == {"No Data": 6}
    assert readings[0].to_line() == "bms,point=CMC.328.RT,source=siemens value=25.0 1514354400000000000"
    # 12/27/2017 0:00:00 in Chicago (CST, UTC-6); Point_2 is ON.
    assert readings[0].time_ns == utc("2017-12-27T06:00:00")
    assert (readings[1].tags["point"], readings[1].fields["value"]) == ("CMC.328.SP", 1.0)
    # 1/2/2018 3:30:00: only Point_2 has a sample.
    assert [(r.tags["point"], r.fields["value"]) for r in readings if r.time_ns == utc("2018-01-02T09:30:00")] == [
        ("CMC.328.SP", 1.0)
    ]
def test_counts_agree_with_the_raw_text() -> None:
    """Recount with plain splits: CR-separated lines, a header row naming Point_N, data rows after it."""
    lines = EVANS.read_bytes().decode("utf-8-sig").split("\r")
    names = {
        cells[0].rstrip(":"): cells[1] for cells in (line.split(",") for line in lines) if cells[0].startswith("Point_")
    }
    start = next(i for i, line in enumerate(lines) if line.startswith("<>Date"))
    columns = lines[start].split(",")[2:]
    data = [line.split(",") for line in lines[start + 1 :] if line[:1].isdigit()]
    cells = [(names[c], row[2 + i]) for row in data for i, c in enumerate(columns)]

    readings, report = parse_bytes(EVANS.read_bytes())
    assert report.rows_read == len(data)
    assert report.skipped["No Data"] == sum(1 for _, v in cells if v == "No Data")
    expected = [
        (p, {"ON": 1.0, "OFF": 0.0}.get(v) if v in ("ON", "OFF") else float(v)) for p, v in cells if v != "No Data"
    ]
    assert [(r.tags["point"], r.fields["value"]) for r in readings] == expected
@pytest.mark.parametrize(
    "dialect",
    [
        pytest.param(quoted_crlf, id="quoted-crlf"),
        pytest.param(lambda b: b.removeprefix(b"\xef\xbb\xbf").replace(b"\r", b"\n"), id="lf-no-bom"),
    ],
)
def test_both_dialects_give_identical_readings(dialect: Any) -> None:
    original = EVANS.read_bytes()
    converted = dialect(original)
    assert converted != original
    a, report_a = parse_bytes(original)
    b, report_b = parse_bytes(converted)
    assert [r.to_line() for r in a] == [r.to_line() for r in b]
    assert (report_a.rows_read, report_a.skipped) == (report_b.rows_read, report_b.skipped)
def test_the_parser_is_lazy() -> None:
    with EVANS.open("rb") as f:
        readings = siemens.parse(f, FileContext(PurePosixPath("siemens/x.csv"), timezone=TZ), Report())
        assert inspect.isgenerator(readings)
        assert next(readings).tags["point"] == "CMC.328.RT"
        readings.close()
        assert not f.closed  # the caller's stream stays the caller's


def test_values_that_are_not_numbers() -> None:
    readings, report = parse_bytes(
        report_text(
            [
                "11/1/2017,0:00:00,12.5,OFF",
                "11/1/2017,0:15:00,Data Loss,ON",
                "11/1/2017,0:30:00,No Data,AUTO",
                "11/1/2017,0:45:00,,ON",
                "11/1/2017,1:00:00,13",  # short row
                "11/31/2017,1:15:00,13,ON",  # no such date
                "11/1/2017,1:30,14.5,NIGHT",  # no seconds; NIGHT is a state given by the options
            ]
        ),
        states={"DAY": 0, "NIGHT": 1},
    )
    assert dict(report.skipped) == {
        "Data Loss": 1,
        "No Data": 1,
        "unknown text value": 1,
        "empty value": 1,
        "short row": 1,
        "bad timestamp": 1,
    }
    assert [(r.tags["point"], r.fields["value"]) for r in readings] == [
        ("AHU1.SAT", 12.5),
        ("AHU1.FAN", 0.0),
        ("AHU1.FAN", 1.0),
        ("AHU1.FAN", 1.0),
        ("AHU1.SAT", 14.5),
        ("AHU1.FAN", 1.0),
    ]
    assert readings[-1].time_ns == utc("2017-11-01T06:30:00")  # CDT, UTC-5


def test_the_repeated_hour_when_dst_ends() -> None:
    """5 Nov 2017 in Chicago: 1:00–1:45 CDT, then 1:00–1:45 again in CST. Eight distinct instants."""
    times = [f"{h}:{m:02}:00" for h in (0, 1) for m in (0, 15, 30, 45)] + [f"1:{m:02}:00" for m in (0, 15, 30, 45)]
    times.append("2:00:00")
    readings, report = parse_bytes(report_text([f"11/5/2017,{t},{i}" for i, t in enumerate(times)], ("OAT",)))
    assert not report.skipped
    stamps = [r.time_ns for r in readings]
    assert stamps[0] == utc("2017-11-05T05:00:00")
    assert [(b - a) // 10**9 for a, b in itertools.pairwise(stamps)] == [900] * (len(stamps) - 1)
    assert stamps[-1] == utc("2017-11-05T08:00:00")  # 2:00 CST


def test_the_skipped_hour_when_dst_starts() -> None:
    rows = ["3/12/2017,1:45:00,1", "3/12/2017,2:00:00,2", "3/12/2017,2:30:00,3", "3/12/2017,3:00:00,4"]
    readings, report = parse_bytes(report_text(rows, ("OAT",)))
    assert report.skipped == {"nonexistent local time": 2}
    assert [(r.fields["value"], r.time_ns) for r in readings] == [
        (1.0, utc("2017-03-12T07:45:00")),
        (4.0, utc("2017-03-12T08:00:00")),
    ]


def test_concatenated_reports_are_read_one_after_the_other() -> None:
    first = report_text(["1/1/2018,0:00:00,1,ON"])
    second = report_text(["1/1/2018,0:00:00,2"], ("CHW.FLOW",))
    readings, report = parse_bytes(first + b"\r" + second, tz="UTC")
    assert [(r.tags["point"], r.fields["value"]) for r in readings] == [
        ("AHU1.SAT", 1.0),
        ("AHU1.FAN", 1.0),
        ("CHW.FLOW", 2.0),
    ]
    assert report.rows_read == 2


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"\r\n , \r\n", "empty file"),
        (
            b"02001283\t02001283\nMV_T302_V002\tPh 1 V\n",
            "no <>Date,Time,Point_1,... row: not a Siemens Insight trend interval report",
        ),
        (
            b"Point_1:,A,,5 minutes\r<>Date,Time,Point_1,Point_2\r",
            "column Point_2 is not defined in the report's Point_N header",
        ),
    ],
)
def test_unusable_files_are_rejected(data: bytes, reason: str) -> None:
    with pytest.raises(Rejected, match=f"^{re.escape(reason)}$"):
        parse_bytes(data)


def test_bad_options_are_rejected() -> None:
    with pytest.raises(Rejected, match="option states"):
        parse_bytes(report_text([]), states=["ON"])
    with pytest.raises(Rejected, match="unknown time zone 'Mars/Olympus'"):
        parse_bytes(report_text([]), tz="Mars/Olympus")
