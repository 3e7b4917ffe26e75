"""spikes against a real InfluxDB: the dry run lists exactly the seeded spikes and deletes nothing; --delete deletes
exactly them, and what shared their timestamps (another field, a rollup point) survives."""

from __future__ import annotations

import pytest

from fieldstation.cli import main
from fieldstation.influxd import LocalInfluxd
from fieldstation.tools.common import format_time, parse_time
from harness.influx import points

T0 = parse_time("2026-01-01T00:00:00Z")
STEP = 10 * 10**9
SPIKES = {("t1", 50): 35.0, ("t1", 120): 36.5, ("t1", 170): 3.0, ("t2", 80): 99.0}
RANGE = ["--start", "2026-01-01T00:00:00Z", "--end", "2026-01-01T01:00:00Z"]


def _value(sensor: str, i: int) -> float:
    # A slow ramp with deterministic jitter of ±0.2: nothing an honest MAD test should flag.
    return round(20.0 + 0.01 * i + 0.1 * ((i * 7919) % 5 - 2), 6) + (
        5.0 if sensor == "t2" else 0.0
    )


@pytest.fixture
def seeded(influxd: LocalInfluxd) -> LocalInfluxd:
    influxd.query(
        'CREATE RETENTION POLICY "rollup_1m" ON "fieldstation" DURATION INF REPLICATION 1'
    )
    lines = []
    for sensor in ("t1", "t2"):
        for i in range(200):
            v = SPIKES.get((sensor, i), _value(sensor, i))
            extra = ",humidity=41i" if (sensor, i) == ("t1", 120) else ""
            lines.append(
                f"temperature,sensor={sensor},unit=C value={v!r}{extra} {T0 + i * STEP}"
            )
    from fieldstation.influxql import Influx

    Influx(influxd.url).write(lines, "fieldstation")
    # A rollup point that happens to share the first spike's timestamp.
    Influx(influxd.url).write(
        [f"temperature,sensor=t1,unit=C mean_value=21.25 {T0 + 50 * STEP}"],
        "fieldstation",
        rp="rollup_1m",
    )
    return influxd


def _spike_lines(out: str) -> set[tuple[str, str]]:
    found = set()
    for line in out.splitlines():
        if line.startswith("2026-"):
            stamp, series = line.split()[:2]
            found.add((stamp, series))
    return found


def _expected() -> set[tuple[str, str]]:
    return {(format_time(T0 + i * STEP), f"sensor={s},unit=C") for s, i in SPIKES}


def test_dry_run_lists_exactly_the_spikes_and_deletes_nothing(
    seeded: LocalInfluxd, capsys: pytest.CaptureFixture[str]
) -> None:
    before = points(seeded, "temperature")
    assert (
        main(
            [
                "spikes",
                "temperature",
                "--url",
                seeded.url,
                "--db",
                "fieldstation",
                *RANGE,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert _spike_lines(out) == _expected()
    assert "4 spikes (dry run" in out
    assert points(seeded, "temperature") == before


def test_delete_removes_exactly_the_spikes(
    seeded: LocalInfluxd, capsys: pytest.CaptureFixture[str]
) -> None:
    before = points(seeded, "temperature")
    args = [
        "spikes",
        "temperature",
        "--url",
        seeded.url,
        "--db",
        "fieldstation",
        *RANGE,
    ]
    assert main([*args, "--delete"]) == 0
    out = capsys.readouterr().out
    assert _spike_lines(out) == _expected()  # shown before they go
    assert "4 spikes deleted" in out
    after = points(seeded, "temperature")
    spike_keys = {(s, T0 + i * STEP) for s, i in SPIKES}
    # Every value that was not a spike is still there, unchanged; no spike value is.
    kept = [p for p in before if (p["sensor"], p["time"]) not in spike_keys]
    assert [p for p in after if p["value"] is not None] == kept
    # The spike's point also carried humidity: written back, still an integer.
    at_120 = [p for p in after if p["time"] == T0 + 120 * STEP and p["sensor"] == "t1"]
    assert at_120 == [
        {
            "time": T0 + 120 * STEP,
            "humidity": 41,
            "sensor": "t1",
            "unit": "C",
            "value": None,
        }
    ]
    types = seeded.rows('SHOW FIELD KEYS FROM "temperature"', "fieldstation")
    assert {r["fieldKey"]: r["fieldType"] for r in types}["humidity"] == "integer"
    # The rollup point at the first spike's timestamp survived the DELETE.
    assert seeded.rows('SELECT * FROM "rollup_1m"."temperature"', "fieldstation") == [
        {"time": T0 + 50 * STEP, "mean_value": 21.25, "sensor": "t1", "unit": "C"}
    ]
    # Nothing left to find.
    assert main(args) == 0
    assert "no spikes" in capsys.readouterr().out


def test_absolute_method_and_tag_filter(
    seeded: LocalInfluxd, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "spikes",
        "temperature",
        "--url",
        seeded.url,
        "--db",
        "fieldstation",
        *RANGE,
    ]
    assert (
        main(
            [
                *args,
                "--method",
                "absolute",
                "--min",
                "10",
                "--max",
                "30",
                "--where",
                "sensor=t1",
            ]
        )
        == 0
    )
    found = _spike_lines(capsys.readouterr().out)
    assert found == {
        (format_time(T0 + i * STEP), "sensor=t1,unit=C") for s, i in SPIKES if s == "t1"
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--field", "nope"], "temperature: no field 'nope' (fields: humidity, value)"),
        (["--method", "absolute"], "spikes --method absolute: give --min and/or --max"),
        (["--last", "soon"], "'soon': expected a duration such as 90s, 15m, 24h or 7d"),
    ],
)
def test_bad_input_is_one_line(
    seeded: LocalInfluxd,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    assert (
        main(
            [
                "spikes",
                "temperature",
                "--url",
                seeded.url,
                "--db",
                "fieldstation",
                *extra,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err == f"fieldstation: {message}\n"


def test_unknown_measurement_is_one_line(
    influxd: LocalInfluxd, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["spikes", "nothing", "--url", influxd.url, "--db", "fieldstation"]) == 2
    )
    assert (
        capsys.readouterr().err
        == "fieldstation: nothing: no such measurement in database fieldstation\n"
    )
