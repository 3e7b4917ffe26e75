"""MV2 logger exports: every powerview fixture parsed, counts checked against the raw text, anomalies, rejections."""

from __future__ import annotations

import inspect
import io
import itertools
import re
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest

from fieldstation.ingest import FileContext, Rejected, Report, mv2
from fieldstation.reading import Reading

FIXTURES = Path(__file__).parents[2] / "fixtures"  # copies of the shared fixtures (tests/fixtures/SOURCES.md)
DATA = FIXTURES / "powerview" / "data"

CONCAT = "0_camp_base/02001283/parsed/T302_02001283_T302_260108_214031.tsv"
TZ = "Europe/Paris"  # where the loggers are (the V003 headers say so)
DATE = re.compile(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d")


def relpath(fixture: str) -> PurePosixPath:
    """powerview/data/<client>/[<campaign>/]<serial>/[parsed|error/]<file> → mv2/<client>/…/<serial>/<file>.

    powerview sorts processed files into parsed/ and error/ below the serial; the inbox has no such folders.
    """
    parts = [p for p in PurePosixPath(fixture).parts if p not in ("parsed", "error")]
    return PurePosixPath("mv2", *parts)


def run(fixture: str, tz: str = TZ) -> tuple[list[Reading], Report]:
    report = Report()
    with (DATA / fixture).open("rb") as f:
        readings = list(mv2.parse(f, FileContext(relpath(fixture), timezone=tz), report))
    return readings, report


def parse_text(
    text: str, rel: str = "mv2/acme/site/02000800/T302_260101_000000.tsv", tz: str = TZ
) -> tuple[list[Reading], Report]:
    report = Report()
    return list(mv2.parse(io.BytesIO(text.encode()), FileContext(PurePosixPath(rel), timezone=tz), report)), report


def utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 10**9


# Per fixture: data rows in the file, points written, rows skipped by reason, a note expected (or None).
CASES = {
    "dominique/bavella/02000800/T302_260105_162016.tsv": (38, 38 * 6, {}, None),
    "company1/campaign1/02001084/T302_251012_031720.tsv": (143, 143 * 30, {}, "folder serial 02001084 differs"),
    "format_v003/02001311/T302_260122_162658_UTC.tsv": (
        134,
        (134 - 17 - 2) * 6,
        {"all channels zero": 17, "duplicate timestamp": 2},
        None,
    ),
    "test_v003_utc_metadata_4/02000800/T302_260128_162130_UTC.tsv": (
        631,
        (631 - 22 - 4) * 6,
        {"all channels zero": 22, "duplicate timestamp": 4},
        None,
    ),
    "test_v003_utc_metadata_4/02000800/T302_260128_171459_UTC.tsv": (5, 30, {}, None),
    "0_camp_base/02001283/parsed/T302_251024_204336.tsv": (
        349,
        (349 - 2 - 6 - 2) * 6,
        {"clock reset": 2, "all channels zero": 6, "duplicate timestamp": 2},
        None,
    ),
    "0_camp_base/02001283/parsed/T302_260109_102002.tsv": (
        2465,
        (2465 - 1 - 1) * 6,
        {"all channels zero": 1, "truncated line": 1},
        None,
    ),
    CONCAT: (11293, (11293 - 10 - 3) * 6, {"all channels zero": 10, "duplicate timestamp": 3}, "Voie1 W, Voie2 W"),
    "0_camp_base/02001283/parsed/T302_260110_031459.tsv": (33, 33 * 6, {}, None),
}


@pytest.mark.parametrize("fixture", CASES)
def test_every_fixture_parses_to_its_counts(fixture: str) -> None:
    rows, points, skipped, note = CASES[fixture]
    readings, report = run(fixture)
    assert report.rows_read == rows
    assert len(readings) == points
    assert dict(report.skipped) == skipped
    if note is None:
        assert report.notes == []
    else:
        assert any(note in n for n in report.notes), report.notes
    for r in readings:
        assert r.to_line()  # every reading encodes
        assert isinstance(r.fields["value"], float)


@pytest.mark.parametrize("fixture", CASES)
def test_counts_agree_with_the_raw_text(fixture: str) -> None:
    """Recount from the text with plain splits: rows, skips by rule, points = kept rows × channels."""
    lines = (DATA / fixture).read_text().splitlines()
    header = next(line.split("\t") for line in lines if line.startswith("MV_"))
    data = [line.split("\t") for line in lines if DATE.match(line)]
    complete = [row for row in data if len(row) == len(header)]
    reset = [row for row in complete if row[0][6:8] == "20"]
    zero = [row for row in complete if row not in reset and all(float(v) == 0 for v in row[1:])]
    kept = [row for row in complete if row not in reset and row not in zero]
    adjacent_repeats = sum(1 for a, b in itertools.pairwise(kept) if a[0] == b[0])

    readings, report = run(fixture)
    assert report.rows_read == len(data)
    assert report.skipped["truncated line"] == len(data) - len(complete)
    assert report.skipped["clock reset"] == len(reset)
    assert report.skipped["all channels zero"] == len(zero)
    assert report.skipped["duplicate timestamp"] == adjacent_repeats
    assert len(readings) == (len(kept) - adjacent_repeats) * (len(header) - 1)
    # The first row kept is the first point of every channel, in header order.
    first = kept[0]
    assert [r.fields["value"] for r in readings[: len(header) - 1]] == [float(v) + 0.0 for v in first[1:]]


def test_tags_come_from_the_path_and_the_file_serials() -> None:
    readings, report = run("company1/campaign1/02001084/T302_251012_031720.tsv")
    first_row = readings[:30]
    assert {r.tags["client"] for r in readings} == {"company1"}
    assert {r.tags["campaign"] for r in readings} == {"campaign1"}
    # The folder says 02001084; the file's serials (master 02001171 and four slaves) win, with a note.
    assert [r.tags["device"] for r in first_row] == ["02001171"] * 6 + [
        s for s in ("04000466", "04000477", "04001293", "04001344") for _ in range(6)
    ]
    assert [(r.tags["channel"], r.tags["unit"]) for r in first_row[:7]] == [
        ("Ph 1", "V"),
        ("Ph 2", "V"),
        ("Ph 3", "V"),
        ("Voie1", "W"),
        ("Voie2", "W"),
        ("Voie3", "W"),
        ("Voie1", "W"),
    ]
    assert report.notes == [
        "folder serial 02001084 differs from the master serial 02001171 in the file: device tags use the file's serials"
    ]
    # 03/08/25 03:20:00 local (CEST, UTC+2), slave 04001344's Voie6 = 0.0 on the first row.
    assert first_row[0].time_ns == utc("2025-08-03T01:20:00")
    assert first_row[0].to_line() == (
        r"mv2,campaign=campaign1,channel=Ph\ 1,client=company1,device=02001171,unit=V value=242.25 1754184000000000000"
    )


def test_two_folders_mean_no_campaign() -> None:
    readings, _ = run("format_v003/02001311/T302_260122_162658_UTC.tsv")
    assert {(r.tags["client"], r.tags["campaign"], r.tags["device"]) for r in readings} == {
        ("format_v003", "default", "02001311")
    }
    # MasterType Mono: one voltage and five power channels.
    assert [(r.tags["channel"], r.tags["unit"]) for r in readings[:6]] == [
        ("Ph 1", "V"),
        *((f"Voie{i}", "W") for i in range(1, 6)),
    ]


def test_v003_times_are_utc_and_v002_times_local() -> None:
    v003, _ = run("format_v003/02001311/T302_260122_162658_UTC.tsv")
    assert v003[0].time_ns == utc("2026-01-21T08:15:24")  # "DataTimeSettings":"UTC"
    v002, _ = run("dominique/bavella/02000800/T302_260105_162016.tsv")
    assert v002[0].time_ns == utc("2026-01-05T09:00:00")  # 05/01/26 10:00:00 in Paris (CET)
    assert v002[0].fields["value"] == 231.85
    v002_utc, _ = run("dominique/bavella/02000800/T302_260105_162016.tsv", tz="UTC")
    assert v002_utc[0].time_ns == utc("2026-01-05T10:00:00")


def test_the_repeated_hour_when_dst_ends_is_told_apart() -> None:
    """26/10/25 02:00–02:50 appears twice (CEST, then CET): twelve distinct instants, ten minutes apart."""
    readings, report = run(CONCAT)
    volts = {r.time_ns: r.fields["value"] for r in readings if r.tags["channel"] == "Ph 1"}
    assert volts[utc("2025-10-26T00:00:00")] == 246.24  # first 02:00, summer time
    assert volts[utc("2025-10-26T01:00:00")] == 249.65  # second 02:00, winter time
    night = sorted(t for t in volts if utc("2025-10-25T23:50:00") <= t <= utc("2025-10-26T02:00:00"))
    assert [(b - a) // 10**9 for a, b in itertools.pairwise(night)] == [600] * (len(night) - 1)
    assert len(night) == 14
    assert report.skipped["duplicate timestamp"] == 3  # none of them from the repeated hour


def test_the_last_of_repeated_timestamps_wins() -> None:
    readings, _ = run("0_camp_base/02001283/parsed/T302_251024_204336.tsv")
    at = utc("2025-07-29T09:19:37")  # 29/07/25 11:19:37 CEST, written twice in a row
    assert [r.fields["value"] for r in readings if r.time_ns == at and r.tags["channel"] == "Ph 1"] == [231.96]
    # The all-zero row at 11:13:46 does not replace the real one with the same time.
    at = utc("2025-07-29T09:13:46")
    assert [r.fields["value"] for r in readings if r.time_ns == at and r.tags["channel"] == "Ph 1"] == [231.88]


def test_clock_reset_and_zero_rows_write_nothing() -> None:
    readings, _ = run("0_camp_base/02001283/parsed/T302_251024_204336.tsv")
    assert min(r.time_ns for r in readings) == utc("2025-07-29T09:13:36")  # not 01/01/20
    assert not any(all(x.fields["value"] == 0.0 for x in readings[i : i + 6]) for i in range(0, len(readings), 6))


def test_a_truncated_last_line_is_skipped() -> None:
    readings, report = run("0_camp_base/02001283/parsed/T302_260109_102002.tsv")
    assert report.skipped["truncated line"] == 1
    assert readings[-1].time_ns == utc("2025-12-22T04:40:00")  # 05:40, the line before `22/12/25 05:50:00<TAB>24`


def test_a_header_that_does_not_match_its_columns_is_followed_with_a_note() -> None:
    readings, report = run(CONCAT)
    # Written as the header names them ...
    assert [(r.tags["channel"], r.tags["unit"]) for r in readings[:3]] == [
        ("Ph 1", "V"),
        ("Voie1", "W"),
        ("Voie2", "W"),
    ]
    assert [r.fields["value"] for r in readings[:3]] == [247.2, 245.03, 247.11]
    # ... and the report says they look like phase voltages.
    assert report.notes == [
        "02001283: Voie1 W, Voie2 W stay within 10% of Ph 1 V on 90% of rows or more, like phase voltages "
        "(a header naming fewer phases than are wired?): written as named"
    ]


def test_master_type_that_does_not_match_the_columns_is_noted() -> None:
    text = (
        'START_HEADER\n{"DataTimeSettings":"UTC","TimeZoneName":"Europe/Paris","MasterType":"Mono"}\nEND_HEADER\n'
        "START_DATA\n02000800\t02000800\t02000800\t02000800\nMV_T302_V003\tPh 1 V\tPh 2 V\tPh 3 V\n"
        "28/01/26 15:20:00\t237.30\t237.10\t237.30\nEND_DATA\n"
    )
    readings, report = parse_text(text)
    assert len(readings) == 3
    assert report.notes == ["header says MasterType Mono but the master has 3 V channel(s)"]


def test_a_v003_header_in_local_time_uses_its_time_zone() -> None:
    text = (
        'START_HEADER\n{"DataTimeSettings":"Local","TimeZoneName":"Europe/Paris","MasterType":"Mono"}\nEND_HEADER\n'
        "START_DATA\n02000800\t02000800\nMV_T302_V003\tPh 1 V\n28/01/26 15:20:00\t237.30\nEND_DATA\n"
    )
    readings, _ = parse_text(text, tz="UTC")
    assert readings[0].time_ns == utc("2026-01-28T14:20:00")


def test_bad_values_rows_and_the_skipped_spring_hour_are_counted() -> None:
    text = (
        "02000800\t02000800\t02000800\nMV_T302_V002\tPh 1 V\tVoie1 W\n"
        "29/03/26 01:50:00\t230.1\tx\n"  # one bad value: the other is kept
        "29/03/26 02:10:00\t230.2\t5.0\n"  # does not exist in Paris (clocks go 02:00 → 03:00)
        "29/03/26 03:00:00\t230.3\t5.0\t7\n"  # one column too many
        "29/3/26 3:10\t230.4\t5.0\n"  # not DD/MM/YY HH:MM:SS
        "29/03/26 03:20:00\t230.5\tnan\n"  # not finite: skipped like a bad value
        "29/03/26 03:30:00\t230.6\t-0.0\n"
    )
    readings, report = parse_text(text)
    assert dict(report.skipped) == {
        "bad value": 2,
        "nonexistent local time": 1,
        "too many columns": 1,
        "bad timestamp": 1,
    }
    assert [(r.time_ns, r.fields["value"]) for r in readings] == [
        (utc("2026-03-29T00:50:00"), 230.1),
        (utc("2026-03-29T01:20:00"), 230.5),
        (utc("2026-03-29T01:30:00"), 230.6),
        (utc("2026-03-29T01:30:00"), 0.0),
    ]
    assert str(readings[-1].fields["value"]) == "0.0"  # -0.0 is written as 0.0


def test_a_jump_back_of_more_than_a_day_is_a_clock_reset() -> None:
    text = (
        "02000800\t02000800\nMV_T302_V002\tPh 1 V\n"
        "10/01/26 10:00:00\t230.1\n"
        "03/01/26 10:10:00\t230.2\n"  # a week back
        "10/01/26 10:10:00\t230.3\n"
        "10/01/26 09:50:00\t230.4\n"  # twenty minutes back: irregular, kept
    )
    readings, report = parse_text(text, tz="UTC")
    assert dict(report.skipped) == {"clock reset": 1}
    assert [r.fields["value"] for r in readings] == [230.1, 230.3, 230.4]


def test_2020_rows_are_kept_when_the_file_itself_is_from_2020() -> None:
    text = "02000800\t02000800\nMV_T302_V002\tPh 1 V\n01/06/20 10:00:00\t230.1\n"
    readings, report = parse_text(text, rel="mv2/acme/02000800/T302_200601_120000.tsv")
    assert len(readings) == 1
    assert not report.skipped
    _, report = parse_text(text, rel="mv2/acme/02000800/T302_260601_120000.tsv")
    assert report.skipped == {"clock reset": 1}


@pytest.mark.parametrize(
    ("fixture", "reason"),
    [
        (
            "0_camp_base/02001283/error/T202_251022_121951.tsv",
            "unsupported format 'MV_T202_V002' (this parser reads MV_T302_V002, MV_T302_V003)",
        ),
        ("0_camp_base/02001283/error/T302_260109_120045.tsv", "empty file"),
        ("0_camp_base/02001283/error/T302_260109_133915.tsv", "header only: no data rows"),
    ],
)
def test_unusable_files_are_rejected_with_one_line(fixture: str, reason: str) -> None:
    with pytest.raises(Rejected) as exc:
        run(fixture)
    assert str(exc.value) == reason
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("text", "rel", "reason"),
    [
        ("x", "mv2/T302.tsv", "path mv2/T302.tsv is not mv2/<client>/[<campaign>/]<serial>/<file>"),
        ("02000800\t02000800\n", "mv2/a/b/T302.tsv", "header only: no channel row and no data"),
        ("START_HEADER\n{nope\nEND_HEADER\n", "mv2/a/b/T302.tsv", "the JSON header does not parse"),
        ("START_HEADER\n{}\n", "mv2/a/b/T302.tsv", "START_HEADER without END_HEADER"),
        ("02000800\nMV_T302_V002\tPh 1 V\n", "mv2/a/b/T302.tsv", "the serial row has 1 columns and the channel row 2"),
        (
            "01/01/26 00:00:00\t1\n01/01/26 00:10:00\t2\n",
            "mv2/a/b/T302.tsv",
            "unsupported format '01/01/26 00:10:00' (this parser reads MV_T302_V002, MV_T302_V003)",
        ),
    ],
)
def test_malformed_files_are_rejected(text: str, rel: str, reason: str) -> None:
    with pytest.raises(Rejected) as exc:
        parse_text(text, rel=rel)
    assert str(exc.value).startswith(reason)


def test_the_large_export_is_parsed_lazily_in_constant_memory() -> None:
    path = DATA / CONCAT
    size = path.stat().st_size
    report = Report()
    with path.open("rb") as f:
        readings = mv2.parse(f, FileContext(relpath(CONCAT), timezone=TZ), report)
        assert inspect.isgenerator(readings)
        first = next(readings)
        assert first.tags["channel"] == "Ph 1"
        assert f.tell() < size // 20  # the first reading came from the first chunk, not the whole file
        tracemalloc.start()
        try:
            n = 1 + sum(1 for _ in readings)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert n == CASES[CONCAT][1]
    assert peak < 1 << 20  # well under 1 MiB while 67 000 readings passed through (a list of them: ~30 MB)


#: Rows that walk in and out of both DST changes of 2025 in Paris, and back into an hour already read: every
#: time must come out as the clock alone reads it, whatever mv2 keeps of the last hour (issue 19).
DST_WALK = (
    "02000800\t02000800\nMV_T302_V002\tPh 1 V\n"
    "30/03/25 01:50:00\t230.0\n30/03/25 02:10:00\t230.0\n30/03/25 03:00:00\t230.0\n30/03/25 03:10:00\t230.0\n"
    "26/10/25 01:50:00\t231.0\n26/10/25 02:00:00\t231.1\n26/10/25 02:50:00\t231.2\n26/10/25 02:00:00\t231.3\n"
    "26/10/25 02:50:00\t231.4\n26/10/25 01:55:00\t231.5\n26/10/25 02:05:00\t231.6\n26/10/25 03:00:00\t231.7\n"
    "26/10/25 03:59:59\t231.8\n26/10/25 03:60:00\t231.9\n26/10/25 03:5x:00\t232.0\n31/12/25 23:59:59\t232.1\n"
    "01/01/26 00:00:00\t232.2\n"
)


@pytest.mark.parametrize("source", [*CASES, "DST_WALK"])
def test_lines_are_the_readings_encoded_with_the_same_report(source: str) -> None:
    """``lines`` (what the inbox writes) gives exactly ``parse``'s points, each to_line'd, and the same report."""
    results = []
    for fn in (mv2.parse, mv2.lines):
        report = Report()
        if source == "DST_WALK":
            data, ctx = DST_WALK.encode(), FileContext(PurePosixPath("mv2/acme/site/02000800/a.tsv"), timezone=TZ)
        else:
            data, ctx = (DATA / source).read_bytes(), FileContext(relpath(source), timezone=TZ)
        results.append((list(fn(io.BytesIO(data), ctx, report)), report.to_json()))
    (readings, parse_report), (rows, lines_report) = results
    assert [line for _, lines in rows for line in lines] == [r.to_line() for r in readings]
    assert all(line.endswith(f" {ns}") for ns, lines in rows for line in lines)
    assert lines_report == parse_report


def test_the_dst_walk_is_read_by_the_clock() -> None:
    readings, report = parse_text(DST_WALK)
    paris = [
        ("2025-03-30T00:50:00", 230.0), ("2025-03-30T01:00:00", 230.0), ("2025-03-30T01:10:00", 230.0),
        ("2025-10-25T23:50:00", 231.0), ("2025-10-26T00:00:00", 231.1), ("2025-10-26T00:50:00", 231.2),
        ("2025-10-26T01:00:00", 231.3), ("2025-10-26T01:50:00", 231.4), ("2025-10-25T23:55:00", 231.5),
        ("2025-10-26T00:05:00", 231.6), ("2025-10-26T02:00:00", 231.7), ("2025-10-26T02:59:59", 231.8),
        ("2025-12-31T22:59:59", 232.1), ("2025-12-31T23:00:00", 232.2),
    ]  # fmt: skip
    assert [(r.time_ns, r.fields["value"]) for r in readings] == [(utc(t), v) for t, v in paris]
    assert dict(report.skipped) == {"nonexistent local time": 1, "bad timestamp": 2}
