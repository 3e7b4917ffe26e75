"""rename-series against a real InfluxDB: every point, tag and field type survives in every retention policy, the
old measurement goes only after the counts agree, and the rendered dashboards read the new name exactly as a
re-render from the updated config.py would."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldstation.cli import main
from fieldstation.energy import EnergySettings
from fieldstation.grafana import render
from fieldstation.grafana.settings import Alerts, GrafanaSettings
from fieldstation.influxd import LocalInfluxd
from fieldstation.influxql import Influx
from fieldstation.loader import load_sensors
from harness.influx import points

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
CONFIG = """\
from fieldstation.sensors.simulated import Simulated
sensors = {{"Plant": [Simulated(name="m1", measurement="{m}", unit="W"), Simulated(name="other", unit="K")]}}
"""


def _seed(server: LocalInfluxd) -> None:
    server.query(
        'CREATE RETENTION POLICY "rollup_1m" ON "fieldstation" DURATION INF REPLICATION 1'
    )
    lines = []
    for i in range(300):
        t = (
            T0 + i * 10**9 * 3600
        )  # 300 hours: the copy runs in several one-week windows
        lines.append(
            f'power,sensor=m1,phase=L1,unit=W watts={i * 0.5!r},count={i}i,on=true,label="a b" {t}'
        )
        lines.append(
            f"power,sensor=m1,phase=L2,unit=W watts={i * 1.5!r},count={-i}i {t + 7}"
        )
        lines.append(
            f"power,sensor=m2 watts=1.0 {t + 13}"
        )  # a series without the phase and unit tags
    Influx(server.url).write(lines, "fieldstation")
    Influx(server.url).write(
        [f"power,sensor=m1,phase=L1 mean_watts=2.25 {T0}"],
        "fieldstation",
        rp="rollup_1m",
    )


def _types(server: LocalInfluxd, rp: str, m: str) -> dict[str, str]:
    rows = server.rows(f'SHOW FIELD KEYS FROM "{rp}"."{m}"', "fieldstation")
    return {r["fieldKey"]: r["fieldType"] for r in rows}


def _render(outdir: Path, config: Path, measurement: str) -> dict[str, str]:
    config.write_text(CONFIG.format(m=measurement))
    gs = GrafanaSettings(alerts=Alerts(emails=["ops@example.org"]), provisioning_path="/etc/grafana/provisioning")
    render(outdir, load_sensors(config), gs, EnergySettings())
    return {
        p.relative_to(outdir).as_posix(): p.read_text()
        for p in sorted(outdir.rglob("*"))
        if p.is_file()
    }


def test_rename_keeps_every_point_tag_and_type(
    influxd: LocalInfluxd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _seed(influxd)
    raw_before = points(influxd, "power")
    rollup_before = influxd.rows(
        'SELECT * FROM "rollup_1m"."power" GROUP BY *', "fieldstation"
    )
    types_before = _types(influxd, "autogen", "power")
    assert types_before == {
        "count": "integer",
        "label": "string",
        "on": "boolean",
        "watts": "float",
    }
    provisioning = tmp_path / "provisioning"
    _render(provisioning, tmp_path / "config.py", "power")

    # config.py still has a sensor writing power: refused, nothing touched.
    common = [
        "rename-series",
        "power",
        "power_w",
        "--url",
        influxd.url,
        "--db",
        "fieldstation",
    ]
    assert main([*common, "--config", str(tmp_path / "config.py")]) == 2
    assert capsys.readouterr().err == (
        f'fieldstation: {tmp_path / "config.py"}: m1 still write power: set measurement="power_w" there and restart '
        "the agent first (then rename with --merge), or --force\n"
    )
    assert points(influxd, "power") == raw_before

    rc = main(
        ["rename-series", "power", "power_w", "--url", influxd.url, "--db", "fieldstation",
         "--provisioning", str(provisioning), "--config", str(tmp_path / "config.py"), "--force"]
    )  # fmt: skip
    assert rc == 0
    out, err = capsys.readouterr()
    assert (
        "autogen: 900 points copied into power_w, counts and field types verified"
        in out
    )
    assert "rollup_1m: 1 points copied into power_w" in out
    assert "power: dropped" in out
    assert 'm1 still write power: set measurement="power_w" there' in err

    assert points(influxd, "power_w") == raw_before
    assert (
        influxd.rows('SELECT * FROM "rollup_1m"."power_w" GROUP BY *', "fieldstation")
        == rollup_before
    )
    assert _types(influxd, "autogen", "power_w") == types_before
    assert (
        influxd.rows('SHOW MEASUREMENTS WITH MEASUREMENT = "power"', "fieldstation")
        == []
    )
    # Tags stayed tags (SELECT INTO without GROUP BY * would have made them fields).
    tags = influxd.rows('SHOW TAG KEYS FROM "power_w"', "fieldstation")
    assert sorted(r["tagKey"] for r in tags) == ["phase", "sensor", "unit"]

    # The rewritten provisioning is what rendering the updated config.py gives.
    rewritten = {
        p.relative_to(provisioning).as_posix(): p.read_text()
        for p in sorted(provisioning.rglob("*"))
        if p.is_file()
    }
    assert any('"power_w"' in text for text in rewritten.values())
    assert rewritten == _render(tmp_path / "again", tmp_path / "config.py", "power_w")


def test_refuses_an_existing_name_and_keeps_the_old(
    influxd: LocalInfluxd, capsys: pytest.CaptureFixture[str]
) -> None:
    _seed(influxd)
    Influx(influxd.url).write([f"power_w,sensor=x watts=1.0 {T0}"], "fieldstation")
    before = points(influxd, "power")
    assert (
        main(
            [
                "rename-series",
                "power",
                "power_w",
                "--url",
                influxd.url,
                "--db",
                "fieldstation",
            ]
        )
        == 2
    )
    assert capsys.readouterr().err == (
        "fieldstation: power_w: already exists in database fieldstation (--merge copies into it anyway)\n"
    )
    assert points(influxd, "power") == before


def test_refuses_a_measurement_a_continuous_query_names(
    influxd: LocalInfluxd, capsys: pytest.CaptureFixture[str]
) -> None:
    _seed(influxd)
    influxd.query(
        'CREATE CONTINUOUS QUERY "cq_power" ON "fieldstation" BEGIN SELECT sum("watts") AS "watts" INTO '
        '"fieldstation"."rollup_1m"."power" FROM "fieldstation"."autogen"."power" GROUP BY time(1m), * END'
    )
    assert (
        main(
            [
                "rename-series",
                "power",
                "power_w",
                "--url",
                influxd.url,
                "--db",
                "fieldstation",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err == (
        "fieldstation: power: named by continuous query cq_power (change influx setup first, or its rollups would stop)\n"
    )
    assert len(points(influxd, "power")) == 900
