"""Generic CSV through a column mapping: the Arduino log, time formats, units, skipped values, rejections."""

from __future__ import annotations

import inspect
import io
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from fieldstation.ingest import FileContext, Rejected, Report, generic_csv
from fieldstation.reading import Reading

FIXTURES = Path(__file__).parents[2] / "fixtures"  # copies of the shared fixtures (tests/fixtures/SOURCES.md)
ARDUINO = FIXTURES / "expmonitor" / "exp_surv_test.csv"

#: The lab's 12 analog inputs, 0–3.3 V, logged in Paris in September 2020 (the file's times carry no year).
ARDUINO_MAPPING: dict[str, Any] = {
    "measurement": "lab_analog",
    "time": {"column": "Time", "format": "%m/%d %H:%M:%S", "year": 2020},
    "tags": {"site": "lab"},
    "fields": {f"AnalogIn{i}": {"field": f"ain{i}", "unit": "V"} for i in range(12)},
    "timezone": "Europe/Paris",
}


def parse_bytes(data: bytes, options: dict[str, Any], tz: str = "UTC") -> tuple[list[Reading], Report]:
    report = Report()
    ctx = FileContext(PurePosixPath("lab/log.csv"), timezone=tz, options=options)
    return list(generic_csv.parse(io.BytesIO(data), ctx, report)), report


def utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 10**9
def test_the_arduino_log() -> None:
    readings, report = parse_bytes(ARDUINO.read_bytes(), ARDUINO_MAPPING)
    # Recount with plain splits: rows after the header, "-" cells, rows with at least one number.
    rows = [line.split(",") for line in ARDUINO.read_text().splitlines()[1:] if line.strip()]
    dashes = sum(cell.strip() == "-" for row in rows for cell in row[1:])
    assert report.rows_read == len(rows) == 62
    assert dict(report.skipped) == {"missing value": dashes}
    assert len(readings) == sum(any(c.strip() != "-" for c in row[1:]) for row in rows)
    first = readings[0]
    # 09/22 16:57:27 in Paris (CEST, UTC+2), AnalogIn0 1.309, AnalogIn1 0.83, the rest "-".
    assert first.time_ns == utc("2020-09-22T14:57:27")
    assert first.fields == {"ain0": 1.309, "ain1": 0.83}
    assert first.tags == {"sensor": "lab", "site": "lab", "unit": "V"}
    assert first.to_line() == "lab_analog,sensor=lab,site=lab,unit=V ain0=1.309,ain1=0.83 1600786647000000000"
    full = readings[14]  # 09/22 17:35:00, all twelve inputs
    assert full.fields == {f"ain{i}": float(v) for i, v in enumerate(rows[14][1:])}
def test_the_parser_is_lazy_and_leaves_the_stream_open() -> None:
    with ARDUINO.open("rb") as f:
        readings = generic_csv.parse(f, FileContext(PurePosixPath("lab/x.csv"), options=ARDUINO_MAPPING), Report())
        assert inspect.isgenerator(readings)
        assert next(readings).fields["ain0"] == 1.309
        readings.close()
        assert not f.closed


def test_fields_are_grouped_by_unit_with_the_mapping_tags() -> None:
    options = {
        "measurement": "climate",
        "time": {"column": "t", "format": "iso"},
        "tags": {"sensor": "bench-1", "room": "B12"},
        "fields": {
            "Temperature": {"field": "temp", "unit": "°C"},
            "RH": {"field": "rh", "unit": "%"},
            "Dew": {"field": "dew", "unit": "°C"},
        },
        "delimiter": ";",
    }
    data = "t;Temperature;RH;Dew;ignored\n2026-01-05T10:00:00;21,5;40;7.2;x\n2026-01-05T10:01:00+02:00;21.6;41;oops;x\n"
    readings, report = parse_bytes(data.encode(), options, tz="Europe/Paris")
    assert [(r.tags["unit"], r.fields, r.time_ns) for r in readings] == [
        ("%", {"rh": 40.0}, utc("2026-01-05T09:00:00")),  # "21,5" is not a number here; naive time → Paris
        ("°C", {"dew": 7.2}, utc("2026-01-05T09:00:00")),
        ("°C", {"temp": 21.6}, utc("2026-01-05T08:01:00")),  # the offset in the text wins
        ("%", {"rh": 41.0}, utc("2026-01-05T08:01:00")),
    ]
    assert readings[0].tags == {"sensor": "bench-1", "room": "B12", "unit": "%"}
    assert dict(report.skipped) == {"not a number": 2}


@pytest.mark.parametrize(
    ("fmt", "cell", "expected"),
    [
        ("epoch_s", "1767607200", "2026-01-05T10:00:00"),
        ("epoch_s", "1767607200.5", "2026-01-05T10:00:00.500"),
        ("epoch_ms", "1767607200250", "2026-01-05T10:00:00.250"),
        ("%Y-%m-%d %H:%M:%S", "2026-01-05 10:00:00", "2026-01-05T10:00:00"),
        ("%d/%m/%Y %H:%M", "05/01/2026 10:00", "2026-01-05T10:00:00"),
    ],
)
def test_time_formats(fmt: str, cell: str, expected: str) -> None:
    options = {"measurement": "m", "time": {"column": "Time", "format": fmt}, "fields": {"v": {"field": "v"}}}
    readings, _ = parse_bytes(f"Time,v\n{cell},1\n".encode(), options)
    assert readings[0].time_ns == int(datetime.fromisoformat(expected).replace(tzinfo=UTC).timestamp() * 1000) * 10**6
    assert "unit" not in readings[0].to_line()  # no unit given: the empty tag is left out of the line


def test_bad_rows_are_counted() -> None:
    options = {"measurement": "m", "time": {"column": "Time", "format": "iso"}, "fields": {"v": {"field": "v"}}}
    data = "Time,v,w\n2026-01-05T10:00:00,1,2\nyesterday,2,3\n2026-01-05T10:02:00\n\n2026-03-29T02:30:00,4,5\n2026-01-05T10:03:00,-,6\n"
    readings, report = parse_bytes(data.encode(), options, tz="Europe/Paris")
    assert [r.fields["v"] for r in readings] == [1.0]
    assert dict(report.skipped) == {"bad timestamp": 1, "short row": 1, "nonexistent local time": 1, "missing value": 1}
    assert report.rows_read == 5


@pytest.mark.parametrize(
    ("options", "data", "reason"),
    [
        (ARDUINO_MAPPING, b"Time,AnalogIn0\n09/22 16:57:27,1.3\n", "mapped column(s) 'AnalogIn1', 'AnalogIn2'"),
        ({**ARDUINO_MAPPING, "time": {"column": "When"}}, b"Time,AnalogIn0\n", "mapped column(s) 'When'"),
        (ARDUINO_MAPPING, b"", "empty file"),
        (
            {k: v for k, v in ARDUINO_MAPPING.items() if k != "measurement"},
            b"",
            "bad column mapping: measurement: Field required",
        ),
        ({**ARDUINO_MAPPING, "colour": "red"}, b"", "bad column mapping: colour: Extra inputs are not permitted"),
        ({**ARDUINO_MAPPING, "fields": {}}, b"", "bad column mapping: fields:"),
        ({**ARDUINO_MAPPING, "timezone": "Paris"}, b"", "unknown time zone 'Paris'"),
    ],
)
def test_unusable_mappings_and_files_are_rejected(options: dict[str, Any], data: bytes, reason: str) -> None:
    with pytest.raises(Rejected) as exc:
        parse_bytes(data, options)
    assert str(exc.value).startswith(reason)
    assert "\n" not in str(exc.value)
