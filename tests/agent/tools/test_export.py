"""export against a real InfluxDB: CSV and Parquet read back to exactly the stored values (times to the
nanosecond, integers as integers), across more than one streamed chunk; --every gives the means per interval."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fieldstation.cli import main
from fieldstation.influxd import LocalInfluxd
from fieldstation.influxql import Influx
from fieldstation.tools.common import parse_time
from fieldstation.tools.export import ROW_GROUP

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
N = ROW_GROUP + 2_000  # site a crosses a chunk boundary
RANGE = ["--start", "2026-01-01T00:00:00Z", "--end", "2026-01-02T00:00:00Z"]


def _temp(i: int) -> float:
    return 18.0 + (i % 40) * 0.25 + (0.1 if i % 3 == 0 else 0.0)  # 0.1: a value with no exact binary form


@pytest.fixture
def seeded(influxd: LocalInfluxd) -> LocalInfluxd:
    lines = [
        f'env,site=a,sensor=t1 temp={_temp(i)!r},count={i}i,ok={"true" if i % 2 else "false"},note="n{i}" '
        f"{T0 + i * 10**9 + 123_456_789}"
        for i in range(N)
    ]
    lines += [f"env,site=b temp={i * 0.5!r},count={-i}i {T0 + i * 60 * 10**9}" for i in range(30)]
    Influx(influxd.url).write(lines, "fieldstation")
    return influxd


def export_env(server: LocalInfluxd, *extra: str) -> int:
    """``fieldstation export env`` of the seeded day from ``server``, with ``extra`` options."""
    return main(["export", "env", "--url", server.url, "--db", "fieldstation", *RANGE, *extra])


def _expected(server: LocalInfluxd) -> list[dict[str, object]]:
    """What InfluxDB holds, series by series; a missing tag is None, the float 0.0 (JSON ``0``) a float."""
    rows = server.rows('SELECT * FROM "env" GROUP BY *', "fieldstation")
    keys = ("time", "site", "sensor", "count", "note", "ok", "temp")
    out = [{k: (r.get(k) or None) if k in ("site", "sensor") else r.get(k) for k in keys} for r in rows]
    for r in out:
        r["temp"] = float(r["temp"])  # type: ignore[arg-type]
    return out


def test_csv_round_trips(seeded: LocalInfluxd, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "env.csv"
    assert export_env(seeded, "-o", str(out)) == 0
    assert capsys.readouterr().err.endswith(f"export: {N + 30} rows to {out}\n")
    with out.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == [
            "time",
            "sensor",
            "site",
            "count",
            "note",
            "ok",
            "temp",
        ]
        got = [
            {
                "time": parse_time(r["time"]),
                "site": r["site"] or None,
                "sensor": r["sensor"] or None,
                "count": int(r["count"]),
                "note": r["note"] or None,
                "ok": {"True": True, "False": False, "": None}[r["ok"]],
                "temp": float(r["temp"]),
            }
            for r in reader
        ]
    assert got == _expected(seeded)


def test_parquet_round_trips(seeded: LocalInfluxd, tmp_path: Path) -> None:
    out = tmp_path / "env.parquet"
    assert export_env(seeded, "-o", str(out)) == 0
    table = pq.read_table(out)
    assert [str(f.type) for f in table.schema] == [
        "timestamp[ns, tz=UTC]", "string", "string", "int64", "string", "bool", "double"
    ]  # fmt: skip
    assert table.num_rows == N + 30
    expected = _expected(seeded)
    times = table.column("time").cast("int64").to_pylist()
    got = table.drop_columns(["time"]).to_pylist()
    assert times == [r["time"] for r in expected]
    assert [{**g, "time": t} for g, t in zip(got, times, strict=True)] == expected


def test_resampled_means(seeded: LocalInfluxd, capsys: pytest.CaptureFixture[str]) -> None:
    assert export_env(seeded, "--where", "site=b", "--every", "10m", "--field", "temp") == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    # site b: temp = i * 0.5 once a minute for 30 minutes → three 10-minute buckets.
    expected = [sum(i * 0.5 for i in range(b, b + 10)) / 10 for b in (0, 10, 20)]
    assert [float(r["temp"]) for r in rows] == expected
    assert [r["time"] for r in rows] == [
        "2026-01-01T00:00:00.000000000Z", "2026-01-01T00:10:00.000000000Z", "2026-01-01T00:20:00.000000000Z"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--format", "parquet"], "export --format parquet: give --output FILE"),
        (
            ["--every", "10m", "--field", "note"],
            "env.note is string: --every averages numbers only",
        ),
        (
            ["--every", "soon"],
            "'soon': expected a duration such as 90s, 15m, 24h or 7d",
        ),
        (
            ["--start", "yesterday"],
            "'yesterday': expected a time such as 2026-11-29T12:00:00Z",
        ),
    ],
)
def test_bad_input_is_one_line(
    seeded: LocalInfluxd,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    assert main(["export", "env", "--url", seeded.url, "--db", "fieldstation", *extra]) == 2
    assert capsys.readouterr().err == f"fieldstation: {message}\n"


def test_unreachable_server_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fieldstation.influxd import free_port

    url = f"http://127.0.0.1:{free_port()}"
    assert main(["export", "env", "--url", url, "--db", "fieldstation", "-o", str(tmp_path / "x.csv")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fieldstation export: {url}: ") and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_progress_on_stderr(
    seeded: LocalInfluxd,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fieldstation.tools import export

    monkeypatch.setattr(export, "PROGRESS_EVERY_S", 0.0)  # every chunk, instead of every 2 s
    out = tmp_path / "env.csv"
    assert export_env(seeded, "-o", str(out)) == 0
    lines = capsys.readouterr().err.splitlines()
    # One line per chunk (two series, one of them in two chunks), counting up; then the total.
    counts = [int(line.split()[1]) for line in lines[:-1]]
    assert len(counts) == 3 and counts == sorted(counts) and counts[-1] == N + 30
    assert all(", at 2026-01-01T" in line for line in lines[:-1])
    assert lines[-1] == f"export: {N + 30} rows to {out}"


def test_user_needs_its_password_in_the_environment(
    seeded: LocalInfluxd,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FIELDSTATION_INFLUX_PASSWORD", raising=False)
    assert main(["export", "env", "--url", seeded.url, "--user", "reader"]) == 2
    assert capsys.readouterr().err == "fieldstation: --user reader: set $FIELDSTATION_INFLUX_PASSWORD to its password\n"
