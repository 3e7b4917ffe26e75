"""Limit rules against a real InfluxDB, evaluated as Grafana does (query A over the window, reduce B, threshold C,
the pending period ``limit_for``): a fridge swinging −0.3 … 9 °C against limits 2 … 8 alerts on both sides and
resolves when it steadies; a steady in-range signal never alerts; a single spike stays pending and never mails."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from fieldstation.energy import EnergySettings
from fieldstation.grafana import render, render_files
from fieldstation.grafana.settings import GrafanaSettings
from fieldstation.influx_setup import Credentials, InfluxSetup, Retention, setup
from fieldstation.influxd import LocalInfluxd
from fieldstation.influxql import Influx
from fieldstation.loader import load_sensors
from harness.grafana import load_rendered, rule_states, substitute
from harness.influx import start_influxd

DB = "fieldstation"
MIN = 60_000
CONFIG = """\
from fieldstation.sensors.simulated import Simulated
sensors = {"Cold room": [
    Simulated(name="fridge", unit="°C", description="Vaccine fridge", interval=10, limits={"value": (2, 8)}),
    Simulated(name="steady", unit="°C", description="Steady fridge", interval=10, limits={"value": (2, 8)}),
    Simulated(name="spiky", unit="°C", description="Fridge with one spike", interval=10, limits={"value": (2, 8)}),
]}
"""
GS = GrafanaSettings(alerts={"emails": ["lab@example.org"], "limit_for": "5m", "evaluate_every": "1m"})  # type: ignore[arg-type]


def triangle(k: int) -> float:
    """−0.3 … 9 °C and back every 2 minutes (12 readings 10 s apart): a compressor cycling hard."""
    phase = k % 12
    return round(-0.3 + 9.3 * (phase if phase <= 6 else 12 - phase) / 6, 3)


@dataclass
class Cold:
    influx: Influx
    rules: dict[str, dict[str, Any]]
    T: int
    swing: tuple[int, int]  # the fridge swings from … to (ms); steady at 5 °C after
    spike: int


@pytest.fixture(scope="module")
def cold(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cold]:
    root = tmp_path_factory.mktemp("cold")
    server: LocalInfluxd = start_influxd(root / "influxd", db=None)
    try:
        setup(InfluxSetup(url=server.url, database=DB, admin=Credentials(username="admin", password=SecretStr("x")),
                          retention=Retention()), say=lambda _: None)
        influx = Influx(server.url)
        T = (int(dt.datetime.now(dt.UTC).timestamp() * 1000) // MIN - 2) * MIN
        start, swing_end, spike = T - 60 * MIN, T - 20 * MIN, T - 40 * MIN
        lines = []
        for k, t in enumerate(range(start, T + 1, 10_000)):
            fridge = triangle(k) if t < swing_end else 5.0
            steady = 5.0 + (k % 5 - 2) * 0.15
            spiky = 9.5 if t == spike else 5.0
            for name, v in (("fridge", fridge), ("steady", steady), ("spiky", spiky)):
                lines.append(f"simulated,sensor={name},unit=°C value={v} {t * 1_000_000}")
        influx.write(lines, DB)
        config = root / "config.py"
        config.write_text(CONFIG)
        out = root / "provisioning"
        render(out, load_sensors(config), GS, EnergySettings())
        _, rules = load_rendered(out)
        yield Cold(influx, {r["title"]: r for r in rules}, T, (start, swing_end), spike)
    finally:
        server.stop()


def states(c: Cold, title: str) -> list[tuple[int, str]]:
    start, _ = c.swing
    return rule_states(c.influx, DB, c.rules[title], start + MIN, c.T, interval_s=60)


@pytest.mark.parametrize("title", ["fridge value above 8 °C", "fridge value below 2 °C"])
def test_a_swinging_fridge_alerts_on_each_side_after_the_pending_period_and_resolves(cold: Cold, title: str) -> None:
    r = cold.rules[title]
    assert r["for"] == "5m" and r["data"][2]["model"]["type"] == "threshold"
    got = states(cold, title)
    first_pending = next(t for t, s in got if s == "Pending")
    first_alert = next(t for t, s in got if s == "Alerting")
    assert first_alert - first_pending == 5 * MIN  # limit_for is the pending period
    _, swing_end = cold.swing
    assert all(s == "Alerting" for t, s in got if first_alert <= t < swing_end)
    # Two minutes (the window) after the swing stops, the alert resolves and stays resolved.
    assert all(s == "Normal" for t, s in got if t >= swing_end + 2 * MIN)


def test_the_swing_is_one_a_one_minute_mean_would_call_normal(cold: Cold) -> None:
    """Why the rule takes the window's max and min: the mean the old rule compared stays inside 2 … 8."""
    _, swing_end = cold.swing
    query = ('SELECT mean("value") FROM "raw"."simulated" WHERE "sensor" = \'fridge\' AND $timeFilter '
             "GROUP BY time(1m) fill(none)")
    means = [r["mean"] for r in cold.influx.rows(substitute(query, from_ms=swing_end - 20 * MIN, to_ms=swing_end - 1),
                                                 DB, epoch="ms")]
    assert len(means) >= 19 and all(2 < m < 8 for m in means), means


@pytest.mark.parametrize("title", ["steady value above 8 °C", "steady value below 2 °C"])
def test_a_steady_in_range_signal_never_alerts(cold: Cold, title: str) -> None:
    got = states(cold, title)
    assert len(got) > 50 and {s for _, s in got} == {"Normal"}


def test_a_single_spike_is_pending_and_never_mails(cold: Cold) -> None:
    got = states(cold, "spiky value above 8 °C")
    # Every evaluation whose 2-minute window holds it (both ends included, as $timeFilter): 3, under limit_for.
    assert [t for t, s in got if s == "Pending"] == [cold.spike, cold.spike + MIN, cold.spike + 2 * MIN]
    assert "Alerting" not in {s for _, s in got}
    assert {s for _, s in states(cold, "spiky value below 2 °C")} == {"Normal"}


def test_each_limit_is_its_own_rule_with_the_windows_max_or_min(cold: Cold) -> None:
    limits = {t: r for t, r in cold.rules.items() if r["labels"]["kind"] == "limit"}
    assert len(limits) == 6  # two per sensor
    for r in limits.values():
        side = r["labels"]["limit"]
        a, b, c = (d["model"] for d in r["data"])
        assert a["query"].startswith("SELECT max(" if side == "high" else "SELECT min(")
        assert b["reducer"] == ("max" if side == "high" else "min")
        assert c["conditions"][0]["evaluator"] == {"type": "gt", "params": [8]} if side == "high" else \
            c["conditions"][0]["evaluator"] == {"type": "lt", "params": [2]}
        assert r["data"][0]["relativeTimeRange"]["from"] == 120


def _rules(config: str, gs: GrafanaSettings, tmp_path: Path) -> tuple[list[str], list[str]]:
    """(rule group names, titles of the agent dashboard's rows) rendered for ``config``."""
    import json

    import yaml

    path = tmp_path / "config.py"
    path.write_text(config)
    files = render_files(load_sensors(path), gs, EnergySettings())
    groups = [g["name"] for g in yaml.safe_load(files["alerting/fieldstation-rules.yaml"])["groups"]]
    agent = json.loads(files["dashboards/fieldstation/fieldstation-agent.json"])
    return groups, [p["title"] for p in agent["panels"] if p["type"] == "row"]


def test_backup_rules_and_panels_only_when_backups_are_enabled(tmp_path: Path) -> None:
    groups, rows = _rules(CONFIG, GS, tmp_path)  # backups: false, the inventory's default
    assert "backups" not in groups and "Backups" not in rows
    groups, rows = _rules(CONFIG, GS.model_copy(update={"backups": True}), tmp_path)
    assert "backups" in groups and "Backups" in rows


def test_ups_rules_only_for_nut_sensors(tmp_path: Path) -> None:
    groups, _ = _rules(CONFIG, GS, tmp_path)
    assert groups == ["sensor limits", "stale sensors"]
    with_ups = CONFIG.replace('sensors = {"Cold room": [', 'from fieldstation.sensors.nut import Nut\n'
                              'sensors = {"Cold room": [Nut(name="ups", ups="eaton"),')
    groups, _ = _rules(with_ups, GS, tmp_path)
    assert groups == ["sensor limits", "stale sensors", "ups"]


def test_rules_earlier_renders_provisioned_are_deleted_by_uid(tmp_path: Path) -> None:
    """Grafana keeps a provisioned rule that leaves the file: the old mean-based limit rules and, without backups,
    the backup rules every station had are listed in deleteRules, and nothing rendered is."""
    import hashlib

    import yaml

    def old_uid(kind: str, key: str) -> str:  # the uid scheme those renders used
        return f"fs-{kind}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    path = tmp_path / "config.py"
    path.write_text(CONFIG)
    for backups in (False, True):
        gs = GS.model_copy(update={"backups": backups})
        doc = yaml.safe_load(render_files(load_sensors(path), gs, EnergySettings())["alerting/fieldstation-rules.yaml"])
        deleted = {d["uid"] for d in doc["deleteRules"]}
        rendered = {r["uid"] for g in doc["groups"] for r in g["rules"]}
        assert {old_uid("limit", f"{n}/value") for n in ("fridge", "steady", "spiky")} <= deleted
        assert (old_uid("backup", "backup") in deleted) is not backups
        assert old_uid("restore-drill", "restore-drill") in (rendered if backups else deleted)
        assert not deleted & rendered
