"""BMS point descriptions (ALC export, Siemens Point Definition reports) → bms_point snapshots."""

from __future__ import annotations

import csv
import io
from pathlib import Path, PurePosixPath

import pytest

from fieldstation.ingest import FileContext, Rejected, Report, alc
from fieldstation.reading import Reading

FIXTURES = Path(__file__).parents[2] / "fixtures"  # copies of the shared fixtures (tests/fixtures/SOURCES.md)
POINTS = FIXTURES / "energycomps" / "point-analysis" / "data"
ALC = POINTS / "alc-point-descriptions" / "faculty-club-and-annex.csv"
SIEMENS = POINTS / "siemens-point-descriptions"
DAY_NS = 86_400 * 10**9


def run(path: Path) -> tuple[list[Reading], Report]:
    report = Report()
    with path.open("rb") as f:
        readings = list(alc.parse(f, FileContext(PurePosixPath("alc", path.name)), report))
    return readings, report


def test_the_alc_export() -> None:
    readings, report = run(ALC)
    # Recount with the csv module: rows after the header, and distinct (location, program, name).
    with ALC.open(newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f) if row][1:]
    distinct = {tuple(cell.strip() for cell in row[:3]) for row in rows}
    assert report.rows_read == len(rows) == 57
    assert len(readings) == len(distinct) == 52
    assert dict(report.skipped) == {"duplicate point": 5}  # the placeholder "point name", six times
    first = readings[0]
    assert first.measurement == "bms_point"
    assert first.tags == {
        "system": "alc",
        "location": "/Carleton College/Faculty Club & Annex/Facility Summary",
        "program": "FACX-Low-Pres-Steam-Boiler B-1",
        "point": "FACX-LPSB.BLR_FAIL",
    }
    assert first.fields == {"type": "BBI", "polarity": "reversed", "exp_num": "0:3", "io_type": "Dry Contact"}
    # `"" ,"" ,"" ` (a space after the closing quote) is an empty cell: no field is written for it.
    heat = next(r for r in readings if r.tags["point"] == "Heat Active")
    assert heat.fields == {"type": "BBV"}
    # Names repeat across programs: the program tag keeps them apart.
    assert {r.tags["program"] for r in readings if r.tags["point"] == "OAT"} == {
        "FACX-Low-Pres-Steam-Boiler B-1",
        "FACX-UH1",
    }


@pytest.mark.parametrize(("name", "points"), [("point-definition-tuv.csv", 59), ("point-definition-nonletter.csv", 1)])
def test_siemens_point_definitions(name: str, points: int) -> None:
    path = SIEMENS / name
    readings, report = run(path)
    names = [
        line.split('","')[1].rstrip('"') for line in path.read_text().splitlines() if line.startswith('"Point Name:"')
    ]
    assert len(names) == points
    assert [r.tags["point"] for r in readings] == names
    assert report.rows_read == points
    assert not report.skipped
    assert report.notes == []  # every key Insight wrote is in the table
    assert all(r.tags["system"] == "siemens" for r in readings)


def test_siemens_fields() -> None:
    readings, _ = run(SIEMENS / "point-definition-tuv.csv")
    by_name = {r.tags["point"]: r.fields for r in readings}
    assert by_name["TEMPRY"] == {
        "system_name": "TEMPRY",
        "type": "LAO",
        "classification": "Building Automation",
        "description": "THIS IS TEMP",
        "panel": "PXCM27 (HULINGS.PXCM27)",
        "address": "-Virtual-",
        "actuator_type": "Voltage",
        "slope": 1.0,
        "intercept": 0.0,
        "cov_limit": 1.0,
        "units": "DEG F",
        "representation": "Float",
        "decimals": 2.0,
        "initial_value": "62.0",
        "totalization": "None",
        "initial_priority": "NONE",
        "alarm_type": "Not Alarmable",
    }
    aux = by_name["TESTING.DONT.TOUCH:AUX TEMP"]
    assert (aux["slope"], aux["intercept"], aux["units"], aux["sensor_type"]) == (0.5, 37.5, "DEG F", "L-Type")
    assert aux["address"] == "FLN:  2   Drop:  02  Point:  15"
    assert by_name["TEST_CT"]["states"] == "0 - OFF; 1 - ON"
    assert "graphic" not in by_name["TEMPRY"]  # <Undefined> is a placeholder, not a value


def test_every_point_of_a_file_is_stamped_at_midnight_of_the_ingest_day() -> None:
    before = alc.snapshot_ns()
    readings, _ = run(ALC)
    after = alc.snapshot_ns()
    assert {r.time_ns for r in readings} <= {before, after}
    assert len({r.time_ns for r in readings}) == 1
    assert readings[0].time_ns % DAY_NS == 0
    assert readings[0].to_line().endswith(f" {readings[0].time_ns}")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"\xef\xbb\xbf\r\n\r\n", "empty file"),
        (b"<>Date,Time,Point_1\r12/27/2017,0:00:00,25\r", "first row '<>Date' is neither"),
        (b"02001283\t02001283\nMV_T302_V002\tPh 1 V\n", "first row '02001283\\t02001283' is neither"),
    ],
)
def test_other_files_are_rejected(data: bytes, reason: str) -> None:
    with pytest.raises(Rejected) as exc:
        list(alc.parse(io.BytesIO(data), FileContext(PurePosixPath("alc/x.csv")), Report()))
    assert str(exc.value).startswith(reason)


def test_short_rows_and_blocks_without_a_name() -> None:
    alc_text = '"Location","Control Program","Name","Type"\r\n"/a","p","n","BAI"\r\n"/a","p"\r\n'
    report = Report()
    readings = list(alc.parse(io.BytesIO(alc_text.encode()), FileContext(PurePosixPath("alc/x.csv")), report))
    assert [r.fields for r in readings] == [{"type": "BAI"}]
    assert report.skipped == {"short row": 1}

    siemens_text = '""\r\n"Point Type:","LAO"\r\n" ****"\r\n"Point Name:","X"\r\n"Point Type:","LAI"\r\n"Colour:","red"\r\n" ****"\r\n'
    report = Report()
    readings = list(alc.parse(io.BytesIO(siemens_text.encode()), FileContext(PurePosixPath("alc/x.csv")), report))
    assert [(r.tags["point"], r.fields) for r in readings] == [("X", {"type": "LAI"})]
    assert report.skipped == {"block without a name": 1}
    assert report.notes == ["keys not in the table, ignored: Colour"]
