"""The inbox: completeness, archive and rejected folders, reports, the sha256 ledger, inotify; and every fixture file
through the whole path (inbox → agent's spool → a real InfluxDB), point counts and sample values checked."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import time
from pathlib import Path, PurePosixPath

import pytest

from fieldstation.influxd import LocalInfluxd
from fieldstation.ingest import FileContext, Report
from fieldstation.ingest.inbox import PARSERS, Inbox, IngestSettings, SourceSettings
from harness.agent import running_agent, settings_for, wait_for

FIXTURES = Path(__file__).parents[2] / "fixtures"  # copies of the shared fixtures (tests/fixtures/SOURCES.md)
POWERVIEW = FIXTURES / "powerview" / "data"
SIEMENS = FIXTURES / "energycomps" / "value-pipeline" / "tests" / "EvansTestFile.csv"

V003 = POWERVIEW / "format_v003" / "02001311" / "T302_260122_162658_UTC.tsv"
T202 = POWERVIEW / "0_camp_base" / "02001283" / "error" / "T202_251022_121951.tsv"
EMPTY = POWERVIEW / "0_camp_base" / "02001283" / "error" / "T302_260109_120045.tsv"


def settings(root: Path, stable: float = 0.2) -> IngestSettings:
    return IngestSettings(
        root=root, timezone="Europe/Paris", stable_seconds=stable, poll_seconds=0.2,
        sources=[SourceSettings(name="mv2", format="mv2"), SourceSettings(name="siemens", format="siemens")],
    )


class Sink:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, lines: list[str]) -> None:
        self.lines.extend(lines)


def drop(inbox: Path, fixture: Path, rel: str) -> Path:
    dest = inbox / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fixture, dest)
    return dest


def scan_until(box: Inbox, n: int, timeout: float = 10) -> list[Report]:
    done: list[Report] = []
    deadline = time.monotonic() + timeout
    while len(done) < n and time.monotonic() < deadline:
        done += box.scan()
        time.sleep(0.05)
    return done


def test_a_file_is_taken_once_stable_then_archived_with_its_report(tmp_path: Path) -> None:
    sink = Sink()
    box = Inbox(settings(tmp_path), sink)
    drop(tmp_path / "inbox", V003, "mv2/acme/winter/02001311/T302_260122_162658_UTC.tsv")
    assert box.scan() == []  # just seen: not yet known to be complete
    (report,) = scan_until(box, 1)
    archived = tmp_path / "archive/mv2/acme/winter/02001311/T302_260122_162658_UTC.tsv"
    assert archived.exists() and not list((tmp_path / "inbox/mv2/acme/winter/02001311").glob("*.tsv"))
    saved = json.loads(archived.with_name(archived.name + ".report.json").read_text())
    assert saved["result"] == "ingested" and saved["points"] == report.points == len(sink.lines) > 0
    assert saved["sha256"] and saved["rows_read"] >= 1 and saved["parser"] == "mv2"


def test_part_files_wait_for_their_rename(tmp_path: Path) -> None:
    sink = Sink()
    box = Inbox(settings(tmp_path, stable=0.0), sink)
    part = drop(tmp_path / "inbox", V003, "mv2/acme/winter/02001311/x.tsv.part")
    for _ in range(3):
        assert box.scan() == []
    part.rename(part.with_name("x.tsv"))
    assert [r.result for r in scan_until(box, 1)] == ["ingested"]


def test_a_bad_file_is_rejected_with_a_one_line_reason(tmp_path: Path) -> None:
    box = Inbox(settings(tmp_path), Sink())
    drop(tmp_path / "inbox", T202, "mv2/acme/base/02001283/T202_251022_121951.tsv")
    drop(tmp_path / "inbox", EMPTY, "mv2/acme/base/02001283/T302_260109_120045.tsv")
    drop(tmp_path / "inbox", V003, "nosuch/whatever.tsv")
    reports = {r.file: r for r in scan_until(box, 3)}
    assert {r.result for r in reports.values()} == {"rejected"}
    for rel, report in reports.items():
        error = (tmp_path / "rejected" / rel).with_name(Path(rel).name + ".error.txt").read_text()
        assert error.count("\n") == 1 and error.strip() == report.reason
    assert "no source 'nosuch' is configured" in (reports["nosuch/whatever.tsv"].reason or "")


def test_a_file_dropped_again_writes_nothing(tmp_path: Path) -> None:
    sink = Sink()
    box = Inbox(settings(tmp_path), sink)
    drop(tmp_path / "inbox", V003, "mv2/acme/winter/02001311/a.tsv")
    scan_until(box, 1)
    written = len(sink.lines)
    drop(tmp_path / "inbox", V003, "mv2/acme/winter/02001311/a.tsv")  # the logger sends it again
    (again,) = scan_until(box, 1)
    assert again.result == "duplicate" and "same content as mv2/acme/winter/02001311/a.tsv" in (again.reason or "")
    assert len(sink.lines) == written
    assert (tmp_path / "archive/mv2/acme/winter/02001311/a.1.tsv").exists()  # both kept, neither overwritten
    # The ledger survives a restart.
    assert scan_until(Inbox(settings(tmp_path), sink), 0, timeout=0.1) == []
    drop(tmp_path / "inbox", V003, "mv2/acme/winter/02001311/b.tsv")
    (third,) = scan_until(Inbox(settings(tmp_path), sink), 1)
    assert third.result == "duplicate"


def test_the_watcher_takes_a_renamed_file_in_a_new_folder_at_once(tmp_path: Path) -> None:
    sink = Sink()
    box = Inbox(settings(tmp_path, stable=3600), sink).start()  # size stability alone would wait an hour
    try:
        time.sleep(0.3)
        part = drop(tmp_path / "inbox", V003, "mv2/newclient/newcampaign/02001311/f.tsv.part")
        time.sleep(0.3)
        part.rename(part.with_name("f.tsv"))
        archived = tmp_path / "archive/mv2/newclient/newcampaign/02001311/f.tsv"
        wait_for(archived.exists, 10, "ingested")
    finally:
        box.stop()


# -- every fixture, end to end ----------------------------------------------------------------------


def fixture_drops() -> list[tuple[Path, str]]:
    """(fixture, relpath in the inbox): MV2 files keep their <client>/<campaign>/<serial>/ folders."""
    out = []
    for path in sorted(POWERVIEW.rglob("*.tsv")):
        rel = path.relative_to(POWERVIEW).parts
        folders = [p for p in rel[:-1] if p not in ("error", "parsed")]
        out.append((path, "/".join(["mv2", *folders, rel[-1]])))
    out.append((SIEMENS, "siemens/EvansTestFile.csv"))
    return out


def expected_keys(fixture: Path, rel: str, timezone: str) -> tuple[set[tuple[str, str, int]], Report]:
    """What the parser makes of the file on its own: the distinct point keys InfluxDB must end up holding."""
    report = Report()
    fmt = {"mv2": "mv2", "siemens": "siemens"}[rel.split("/", maxsplit=1)[0]]
    parser = importlib.import_module(f"fieldstation.ingest.{PARSERS[fmt]}")
    ctx = FileContext(relpath=PurePosixPath(rel), timezone=timezone)
    keys = set()
    try:
        with fixture.open("rb") as f:
            for r in parser.parse(f, ctx, report):
                keys.add((r.measurement, ",".join(f"{k}={v}" for k, v in sorted(r.tags.items())), r.time_ns))
    except Exception:
        return set(), report
    return keys, report


@pytest.mark.timeout(600)
def test_every_fixture_reaches_influxdb_with_its_points(influxd: LocalInfluxd, tmp_path: Path) -> None:
    # As influx setup lays it out: raw points kept briefly (here a day), dropped files in their own policy. The
    # fixtures are months old: routed to raw, InfluxDB would refuse them.
    influxd.query('CREATE RETENTION POLICY "raw" ON "fieldstation" DURATION 1d REPLICATION 1 DEFAULT')
    influxd.query('CREATE RETENTION POLICY "files" ON "fieldstation" DURATION INF REPLICATION 1')
    ingest = settings(tmp_path / "data")
    agent_settings = settings_for(tmp_path, {"local": influxd.url}, ingest=ingest)
    drops = fixture_drops()
    with running_agent(agent_settings, []) as (agent, _):
        for fixture, rel in drops:
            drop(ingest.inbox, fixture, rel)
        wait_for(lambda: agent.inbox is not None and len(agent.inbox.reports) >= len(drops), 300, "every file handled")
        reports = {r.file: r for r in agent.inbox.reports}
        expected_total = 0
        for fixture, rel in drops:
            keys, _ = expected_keys(fixture, rel, ingest.timezone)
            if not keys:
                assert reports[rel].result == "rejected", rel
                continue
            assert reports[rel].result in ("ingested", "duplicate"), (rel, reports[rel].reason)
            expected_total += len(keys) if reports[rel].result == "ingested" else 0
        wait_for(lambda: agent.spool.backlog("local").depth == 0, 120, "the spool to drain")
        assert agent.sinks[0].state.rejected_batches == 0  # nothing refused: the old points went to "files"
    # Distinct points in InfluxDB: each file's points, files overlapping each other counted once.
    all_keys: set[tuple[str, str, int]] = set()
    for fixture, rel in drops:
        if reports[rel].result == "ingested":
            all_keys |= expected_keys(fixture, rel, ingest.timezone)[0]
    stored = influxd.rows('SELECT count("value") FROM "files"."mv2", "files"."bms" GROUP BY *', "fieldstation")
    assert sum(r["count"] for r in stored) == len(all_keys)
    # A sample value straight from a file's text: V003's first row, 21/01/26 08:15:24 UTC, Ph 1 = 236.14 V.
    row = influxd.rows(
        "SELECT \"value\" FROM \"files\".\"mv2\" WHERE \"device\" = '02001311' AND \"unit\" = 'V' "
        "AND time = '2026-01-21T08:15:24Z'", "fieldstation",
    )
    assert [r["value"] for r in row] == [236.14]
    assert (ingest.rejected / "mv2/0_camp_base/02001283/T202_251022_121951.tsv.error.txt").exists()


def test_a_parser_that_breaks_rejects_the_file_instead_of_retrying_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fieldstation.ingest import mv2

    def broken(*args: object) -> object:
        raise KeyError("unexpected column")

    monkeypatch.setattr(mv2, "parse", broken)
    monkeypatch.setattr(mv2, "lines", broken)  # what the inbox calls for mv2 (the same points, encoded once)
    box = Inbox(settings(tmp_path), Sink())
    drop(tmp_path / "inbox", V003, "mv2/acme/winter/02001311/a.tsv")
    (report,) = scan_until(box, 1)
    assert report.result == "rejected" and report.reason == (
        "the mv2 parser failed (KeyError: 'unexpected column'): please report it with the file"
    )
    assert box.scan() == [] and not list((tmp_path / "inbox").rglob("*.tsv"))


def test_isolated_clients_write_into_their_own_database_and_unknown_ones_are_rejected(tmp_path: Path) -> None:
    sink = Sink()
    ingest = settings(tmp_path).model_copy(update={"client_databases": {"acme": "client_acme"}})
    box = Inbox(ingest, sink)
    drop(tmp_path / "inbox", V003, "mv2/acme/winter/02001311/a.tsv")
    drop(tmp_path / "inbox", V003, "mv2/stranger/winter/02001311/b.tsv")
    reports = {r.file: r for r in scan_until(box, 2)}
    assert reports["mv2/acme/winter/02001311/a.tsv"].result == "ingested"
    assert reports["mv2/stranger/winter/02001311/b.tsv"].reason == (
        "client 'stranger' has no database of its own (inventory: influxdb_clients)"
    )
    assert sink.lines and all(line.startswith("@rp=files;db=client_acme mv2,") for line in sink.lines)


# -- encodings and empty files ----------------------------------------------------------------------

ALC = FIXTURES / "energycomps" / "point-analysis" / "data" / "alc-point-descriptions" / "faculty-club-and-annex.csv"
ARDUINO = FIXTURES / "expmonitor" / "exp_surv_test.csv"
#: The lab log's mapping, its first column renamed as a French Windows PC would name it.
WINDOWS_CSV_MAPPING = {
    "measurement": "lab_analog",
    "time": {"column": "Time", "format": "%m/%d %H:%M:%S", "year": 2020},
    "fields": {
        ("Température °C" if i == 0 else f"AnalogIn{i}"): {"field": f"ain{i}", "unit": "V"} for i in range(12)
    },
}

#: (source, fixture, where it lands, (text in the fixture, what a Windows server wrote instead)).
WINDOWS_FILES = [
    ("siemens", SIEMENS, "siemens/trend.csv",
     [("Trend Definitions Used", "Trend Definitions Used (°F)"), ("CMC.328.RT", "Façade.328.RT")]),
    ("mv2", V003, "mv2/acme/winter/02001311/T302.tsv", [("Voie1 W", "Façade W")]),
    ("alc", ALC, "alc/points.csv", [("Faculty Club & Annex", "Faculté Club & Annex")]),
    ("csv", ARDUINO, "csv/lab.csv", [("AnalogIn0", "Température °C")]),
]


def encoding_settings(root: Path, **options: dict[str, object]) -> IngestSettings:
    return IngestSettings(
        root=root, timezone="Europe/Paris", stable_seconds=0, poll_seconds=0.2,
        sources=[
            SourceSettings(name="siemens", format="siemens", options=options.get("siemens", {})),
            SourceSettings(name="mv2", format="mv2", options=options.get("mv2", {})),
            SourceSettings(name="alc", format="alc", options=options.get("alc", {})),
            SourceSettings(name="csv", format="csv", options={**WINDOWS_CSV_MAPPING, **options.get("csv", {})}),
        ],
    )


def windows_text(fixture: Path, edits: list[tuple[str, str]]) -> str:
    text = fixture.read_bytes().decode("utf-8-sig")  # a cp1252 file has no byte-order mark
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    return text


def ingest_bytes(box: Inbox, root: Path, rel: str, data: bytes) -> Report:
    dest = root / "inbox" / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    (report,) = scan_until(box, 1)
    return report


@pytest.mark.parametrize(("source", "fixture", "rel", "edits"), WINDOWS_FILES, ids=[w[0] for w in WINDOWS_FILES])
def test_a_cp1252_file_is_read_as_cp1252_with_every_row(
    tmp_path: Path, source: str, fixture: Path, rel: str, edits: list[tuple[str, str]]
) -> None:
    text = windows_text(fixture, edits)
    utf8_sink, cp_sink = Sink(), Sink()
    utf8 = ingest_bytes(Inbox(encoding_settings(tmp_path / "a"), utf8_sink), tmp_path / "a", rel, text.encode())
    cp = ingest_bytes(Inbox(encoding_settings(tmp_path / "b"), cp_sink), tmp_path / "b", rel, text.encode("cp1252"))
    assert (utf8.result, utf8.encoding, utf8.notes) == ("ingested", "utf-8", [])
    assert cp.result == "ingested", cp.reason
    assert cp.encoding == "cp1252"
    assert len(cp.notes) == 1 and cp.notes[0].startswith("not UTF-8 (byte 0x") and cp.notes[0].endswith(
        "read as cp1252"
    )
    assert (cp.rows_read, cp.points, cp.skipped) == (utf8.rows_read, utf8.points, utf8.skipped) and cp.points > 0
    assert cp_sink.lines == utf8_sink.lines  # the same points, accented names spelt right
    saved = json.loads((tmp_path / "b/archive" / f"{rel}.report.json").read_text())
    assert saved["encoding"] == "cp1252" and saved["notes"] == cp.notes


def test_one_stray_byte_in_a_utf8_file_costs_no_row(tmp_path: Path) -> None:
    text = V003.read_text(encoding="utf-8")
    data = text.encode().replace(b"Voie1 W", b"Voie1\xb0 W")  # a stray cp1252 byte in the channel row (line 6)
    sink, clean_sink = Sink(), Sink()
    rel = "mv2/acme/winter/02001311/T302.tsv"
    clean = ingest_bytes(Inbox(encoding_settings(tmp_path / "a"), clean_sink), tmp_path / "a", rel, text.encode())
    report = ingest_bytes(Inbox(encoding_settings(tmp_path / "b"), sink), tmp_path / "b", rel, data)
    assert report.result == "ingested" and report.encoding == "cp1252"
    offset = data.index(b"\xb0")
    assert report.notes == [f"not UTF-8 (byte 0xB0 at offset {offset}, line 6): read as cp1252"]
    assert (report.rows_read, report.points) == (clean.rows_read, clean.points) and report.points > 0
    assert any("Voie1°" in line for line in sink.lines)


def test_a_declared_encoding_is_used_and_bytes_invalid_in_it_cost_no_row(tmp_path: Path) -> None:
    _, fixture, rel, edits = WINDOWS_FILES[0]
    data = windows_text(fixture, edits).encode("cp1252")
    declared = ingest_bytes(
        Inbox(encoding_settings(tmp_path / "a", siemens={"encoding": "windows-1252"}), Sink()), tmp_path / "a", rel, data
    )
    assert (declared.result, declared.encoding, declared.notes) == ("ingested", "cp1252", [])
    wrong = ingest_bytes(
        Inbox(encoding_settings(tmp_path / "b", siemens={"encoding": "utf-8"}), Sink()), tmp_path / "b", rel, data
    )
    assert wrong.result == "ingested" and wrong.points == declared.points > 0
    offset = data.index(b"\xb0")  # the ° in the first line
    assert wrong.notes == [f"not valid utf-8 (byte 0xB0 at offset {offset}, line 1): undecodable bytes read as U+FFFD"]


def test_excel_unicode_text_is_read_by_its_byte_order_mark(tmp_path: Path) -> None:
    _, fixture, rel, edits = WINDOWS_FILES[3]
    text = windows_text(fixture, edits)
    utf8 = ingest_bytes(Inbox(encoding_settings(tmp_path / "a"), Sink()), tmp_path / "a", rel, text.encode())
    utf16 = ingest_bytes(Inbox(encoding_settings(tmp_path / "b"), Sink()), tmp_path / "b", rel, text.encode("utf-16"))
    assert (utf16.result, utf16.encoding, utf16.notes) == ("ingested", "utf-16", [])
    assert utf16.points == utf8.points > 0


@pytest.mark.parametrize(
    ("rel", "data", "reason"),
    [
        ("siemens/trend.csv", b"", "empty file (0 bytes)"),
        ("mv2/acme/winter/02001311/T302.tsv", b"", "empty file (0 bytes)"),
        ("alc/points.csv", b"", "empty file (0 bytes)"),
        ("csv/lab.csv", b"", "empty file (0 bytes)"),
        ("siemens/trend.csv", b"\r\n \r\n\t\r\n", "empty file: only blank lines"),
        ("csv/lab.csv", b"\xef\xbb\xbf\n", "empty file: only blank lines"),
    ],
)
def test_an_empty_file_is_rejected_as_empty(tmp_path: Path, rel: str, data: bytes, reason: str) -> None:
    report = ingest_bytes(Inbox(encoding_settings(tmp_path), Sink()), tmp_path, rel, data)
    assert (report.result, report.reason) == ("rejected", reason)
    assert (tmp_path / "rejected" / f"{rel}.error.txt").read_text() == reason + "\n"


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ("klingon", "unknown encoding 'klingon' (use a Python codec name: utf-8, cp1252, latin-1, ...)"),
        ("cp037", "encoding 'cp037' does not write digits, commas and line ends as ASCII does"),
        (1252, "options.encoding must be a codec name such as 'cp1252' (got 1252)"),
    ],
)
def test_a_declared_encoding_is_checked_when_the_settings_load(encoding: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        SourceSettings(name="siemens", format="siemens", options={"encoding": encoding})
    assert SourceSettings(name="s", format="siemens", options={"encoding": "Latin-1"}).options["encoding"] == "iso8859-1"


def test_a_cp1252_trend_report_reaches_influxdb_with_its_accented_point(influxd: LocalInfluxd, tmp_path: Path) -> None:
    influxd.query('CREATE RETENTION POLICY "files" ON "fieldstation" DURATION INF REPLICATION 1')
    _, fixture, rel, edits = WINDOWS_FILES[0]
    text = windows_text(fixture, edits)
    expected, _ = expected_keys(fixture, rel, "Europe/Paris")  # the UTF-8 original, parsed on its own
    facade = {k for k in expected if "point=CMC.328.RT" in k[1]}
    assert facade
    ingest = encoding_settings(tmp_path / "data")
    with running_agent(settings_for(tmp_path, {"local": influxd.url}, ingest=ingest), []) as (agent, _):
        (ingest.inbox / rel).write_bytes(text.encode("cp1252"))
        wait_for(lambda: agent.inbox is not None and len(agent.inbox.reports) == 1, 60, "the file handled")
        (report,) = agent.inbox.reports
        assert (report.result, report.encoding) == ("ingested", "cp1252"), report.reason
        wait_for(lambda: agent.spool.backlog("local").depth == 0, 60, "the spool to drain")
    stored = influxd.rows('SELECT count("value") FROM "files"."bms" GROUP BY "point"', "fieldstation")
    counts = {r["point"]: r["count"] for r in stored}
    assert counts.pop("Façade.328.RT") == len(facade)
    assert sum(counts.values()) + len(facade) == len(expected) == report.points


def test_a_file_renamed_from_its_part_name_is_taken_at_once_and_one_written_in_place_waits(tmp_path: Path) -> None:
    # scan() alone, as when inotify is unavailable; size stability alone would wait an hour.
    sink = Sink()
    box = Inbox(settings(tmp_path, stable=3600), sink)
    inbox = tmp_path / "inbox"
    part = drop(inbox, V003, "mv2/acme/winter/02001311/up.tsv.part")
    in_place = drop(inbox, V003, "mv2/acme/winter/02001311/direct.tsv")
    assert box.scan() == []
    part.rename(part.with_name("up.tsv"))
    (report,) = box.scan()
    assert report.file == "mv2/acme/winter/02001311/up.tsv" and report.result == "ingested" and sink.lines
    assert box.scan() == [] and box.scan() == []
    assert in_place.exists()  # still waiting for its size to hold for stable_seconds
