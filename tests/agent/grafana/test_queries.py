"""Proof of the generated queries without Grafana: every InfluxQL statement of every rendered panel and alert rule
runs against a real InfluxDB seeded with known data, with Grafana's macros substituted as Grafana would, and the
numbers are checked against values computed here independently.

The seeded station (times end at T, a whole minute in the past):
- a UPS read every 60 s for 31 days, on battery for 90 minutes of the last day, with a load spike;
- an energy meter whose counter is read every 10 minutes for 3 days, accounted by the agent's own code;
- a temperature sensor, the Pi, the agent's health and a backup record.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from fieldstation.energy import EnergyAccounting, EnergySettings, Period
from fieldstation.grafana import render
from fieldstation.grafana.settings import GrafanaSettings, Ups
from fieldstation.influx_setup import RP_VARIABLE_QUERY, Credentials, InfluxSetup, Retention, continuous_queries, setup
from fieldstation.influxd import LocalInfluxd
from fieldstation.influxql import Influx
from fieldstation.loader import load_sensors
from fieldstation.reading import Reading
from fieldstation.sensor import process
from fieldstation.sensors.modbus import Modbus
from harness.grafana import all_queries, evaluate_rule, load_rendered, substitute
from harness.influx import start_influxd

DB = "fieldstation"
MIN = 60_000  # ms
DAY = 1440 * MIN
PARIS = ZoneInfo("Europe/Paris")
CONFIG = """\
from fieldstation.sensors.modbus import Modbus
from fieldstation.sensors.nut import Nut
from fieldstation.sensors.pi import Pi
from fieldstation.sensors.simulated import Simulated
sensors = {
    "Power": [Nut(name="ups", ups="eaton", description="Server-room UPS", interval=60),
              Modbus(name="mains_meter", model="orno_we515", port="/dev/ttyUSB0", description="Mains", interval=600)],
    "Host": [Pi(name="pi", interval=60)],
    "Lab": [Simulated(name="t", unit="°C", description="Lab air", interval=60, limits={"value": (15, 25)})],
}
"""
METER = Modbus(name="mains_meter", model="orno_we515", port="/dev/ttyUSB0")
TARIFF = EnergySettings(
    timezone="Europe/Paris",
    default_name="offpeak",
    default_price=0.15,
    periods=[Period(name="peak", start="07:00", end="22:00", price=0.30)],
)
GS = GrafanaSettings(
    alerts={"emails": ["lab@example.org"]},  # type: ignore[arg-type]
    backups=True,
    ups=[Ups(sensor="ups", rated_power_w=900, shutdown_charge=20, low_battery_alert=40, overload_alert=90)],
)


@dataclass
class Station:
    influx: Influx
    outdir: Path
    T: int  # ms
    ups: list[tuple[int, float, bool, float]]  # (t, load, on battery, charge)
    outage: tuple[int, int]  # first and last minute on battery
    spike: int
    counters: list[tuple[int, float]]  # (t, kWh)
    accounted: list[Reading]


def ups_lines(T: int) -> tuple[list[str], list[tuple[int, float, bool, float]], tuple[int, int], int]:
    """31 days of minutes, samples at T - 30 s - k min; on battery for 90 minutes of the last day."""
    lines, samples = [], []
    n = 31 * 1440
    first_ob, last_ob = T - 30_000 - 1000 * MIN, T - 30_000 - 911 * MIN  # 90 samples
    spike = T - 30_000 - 300 * MIN
    charge = 100.0
    for k in range(n - 1, -1, -1):
        t = T - 30_000 - k * MIN
        load = round(25 + 10 * math.sin(k / 97) + (k % 7) * 0.25, 2)
        if t == spike:
            load = 95.0
        ob = first_ob <= t <= last_ob
        charge = max(charge - 0.75, 0.0) if ob else 100.0
        status = "OB DISCHRG" if ob else "OL"
        event = ""
        if t == first_ob:
            event = ',event="power_cut"'
        elif t == last_ob + MIN:
            event = ',event="power_restored"'
        ns = t * 1_000_000
        lines.append(f"nut,sensor=ups,unit=% battery_charge={charge},ups_load={load} {ns}")
        lines.append(f"nut,sensor=ups,unit=V input_voltage=230.0,output_voltage=229.5 {ns}")
        runtime = 3000.0 * charge / 100
        lines.append(f"nut,sensor=ups,unit=s battery_runtime={runtime}" + (f",runtime_left={runtime}" if ob else "") +
                     (",outage_s=5400" if t == last_ob + MIN else "") + f" {ns}")
        lines.append(f'nut,sensor=ups status="{status}",on_line={str(not ob).lower()},'
                     f"on_battery={str(ob).lower()}{event} {ns}")
        samples.append((t, load, ob, charge))
    return lines, samples, (first_ob, last_ob), spike


def meter_lines(T: int) -> tuple[list[str], list[tuple[int, float]], list[Reading]]:
    """A counter read every 10 min for 3 days; the energy readings come from the agent's own accounting."""
    acc = EnergyAccounting(TARIFF)
    lines: list[str] = []
    counters, accounted = [], []
    kwh = 652.0  # crosses 655.35 kWh, where the old script wrapped
    for k in range(3 * 144, -1, -1):
        t = T - k * 10 * MIN
        hour = dt.datetime.fromtimestamp(t / 1000, PARIS).hour
        kwh = round(kwh + (0.4 if 7 <= hour < 22 else 0.1) + (k % 3) * 0.01, 6)
        watts = 2400.0 if 7 <= hour < 22 else 600.0
        raw = {r.field: 1.0 for r in METER.register_map.registers}  # every field of the map, as the driver reads
        raw.update(active_energy=kwh, active_energy_t1=kwh * 0.7, active_power=watts, voltage=231.5, frequency=50.0)
        readings = process(METER, raw, t * 1_000_000).readings  # the agent's own processing: units, tags
        energy = acc.readings(readings)
        lines += [*(r.to_line() for r in readings), *(e.to_line() for e in energy)]
        counters.append((t, kwh))
        accounted += energy
    return lines, counters, accounted


def other_lines(T: int) -> list[str]:
    lines = []
    for k in range(3 * 1440 - 1, -1, -1):
        t = (T - 30_000 - k * MIN) * 1_000_000
        value = 30.0 if k < 10 else 20.0 + (k % 10) * 0.1  # the last 10 minutes above the 25 °C limit
        lines.append(f"simulated,sensor=t,unit=°C value={value} {t}")
        if k % 10 == 0:
            lines.append(f"pi,sensor=pi,unit=% cpu_percent={10 + k % 5},mem_used_percent=40,disk_used_percent_root=21.5 {t}")
            lines.append(f"pi,sensor=pi,unit=°C soc_temp={50 + k % 4} {t}")
            lines.append(f"pi,sensor=pi,unit=s uptime={86400 - k * 60} {t}")
            lines.append(f"pi,sensor=pi,unit=B sd_bytes_written=4096,mem_total=4e9,mem_available=2.4e9,disk_available_root=8e9 {t}")
            lines.append(f"pi,sensor=pi load1=0.5,load5=0.4,load15=0.3,under_voltage=false,"
                         f"under_voltage_occurred=true,throttled=false {t}")
            for s in ("t", "ups", "pi", "mains_meter"):
                lines.append(f"fieldstation_sensor,sensor={s},unit=count reads={3 * 1440 - k}i,errors={(3 * 1440 - k) // 100}i,"
                             f"timeouts=0i,out_of_range=0i,stale=false {t}")
            lines.append(f"fieldstation_spool,sensor=agent,sink=local,unit=count depth={k % 50}i {t}")
            lines.append(f"fieldstation_spool,sensor=agent,sink=local,unit=s oldest_unsent_age={k % 3}.5 {t}")
    lines.append(f"fieldstation_shutdown,host=nas ok=false {(T - 10 * MIN) * 1_000_000}")
    lines.append(f"fieldstation_shutdown,host=web ok=true {(T - 10 * MIN) * 1_000_000}")
    backup = (T - 120 * MIN) * 1_000_000
    lines.append(f"fieldstation_backup,kind=backup,unit=B ok=true,bytes=123456789i,duration_s=42.0 {backup}")
    lines.append(f"fieldstation_backup,kind=restore_drill,unit=B ok=true,bytes=123456789i,duration_s=60.0 {backup - 10**12}")
    return lines


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Station]:
    root = tmp_path_factory.mktemp("station")
    server: LocalInfluxd = start_influxd(root / "influxd", db=None)
    try:
        retention = Retention()
        setup(InfluxSetup(url=server.url, database=DB, admin=Credentials(username="admin", password=SecretStr("x")),
                          retention=retention), say=lambda _: None)
        influx = Influx(server.url)
        T = (int(dt.datetime.now(dt.UTC).timestamp() * 1000) // MIN - 2) * MIN
        ups, samples, outage, spike = ups_lines(T)
        meters, counters, accounted = meter_lines(T)
        lines = ups + meters + other_lines(T)
        for i in range(0, len(lines), 20_000):
            influx.write(lines[i : i + 20_000], DB)
        # What the continuous queries would have written into the rollups over the seeded days (backfill).
        for statement in continuous_queries(DB, retention).values():
            select = statement.split(" BEGIN ")[1].removesuffix(" END")
            start = (T - 32 * DAY) * 1_000_000
            influx.query(select.replace(" GROUP BY", f" WHERE time >= {start} AND time <= {T * 1_000_000} GROUP BY"), DB)
        config = root / "config.py"
        config.write_text(CONFIG)
        outdir = root / "provisioning"
        render(outdir, load_sensors(config), GS, TARIFF)
        yield Station(influx, outdir, T, samples, outage, spike, counters, accounted)
    finally:
        server.stop()


def rows(st: Station, query: str, **kw: Any) -> list[dict[str, Any]]:
    return st.influx.rows(substitute(query, **kw), DB, epoch="ms")


def target(st: Station, uid: str, title: str, ref: str = "A") -> str:
    boards, _ = load_rendered(st.outdir)
    panel = next(p for p in boards[uid]["panels"] if p["title"] == title)
    return str(next(t for t in panel["targets"] if t["refId"] == ref)["query"])


def alias(st: Station, uid: str, title: str, name: str) -> str:
    boards, _ = load_rendered(st.outdir)
    panel = next(p for p in boards[uid]["panels"] if p["title"] == title)
    return str(next(t for t in panel["targets"] if t.get("alias") == name)["query"])


def only(result: list[dict[str, Any]]) -> Any:
    (row,) = result
    (value,) = [v for k, v in row.items() if k != "time"]
    return value


# -- every query runs ----------------------------------------------------------------------------------

#: Panels that are empty on this station by design (the seeded UPS reports no ups.realpower).
EMPTY_BY_DESIGN = ("ups.realpower", "runtime_left")  # no realpower seeded; at T the UPS is on wall power


def test_every_rendered_query_runs_and_finds_the_seeded_data(station: Station) -> None:
    queries = all_queries(station.outdir)
    assert len(queries) > 60
    empty = []
    for where, query, item in queries:
        for rp in ("raw", "rollup_1m", "rollup_1h"):
            kw: dict[str, Any] = {"from_ms": station.T - DAY, "to_ms": station.T, "rp": rp}
            if "rule" in where:
                kw["from_ms"] = station.T - item["data"][0]["relativeTimeRange"]["from"] * 1000
            result = rows(station, query, **kw)  # raises on any InfluxQL error
            if rp == "raw" and not result and not any(a in str(item) for a in EMPTY_BY_DESIGN):
                empty.append(where)
    # Rules that look for trouble find none at T on a healthy station; everything else shows data.
    assert [w for w in empty if not w.startswith("rule")] == [], empty


def test_the_rp_variable_picks_the_policy_for_the_span(station: Station) -> None:
    for span, policy in [(6 * 3600_000, "raw"), (2 * DAY, "raw"), (7 * DAY, "rollup_1m"), (365 * DAY, "rollup_1h")]:
        got = rows(station, RP_VARIABLE_QUERY, from_ms=station.T - span, to_ms=station.T)
        assert [r["rp"] for r in got] == [policy], span


def test_a_series_reads_the_same_means_from_raw_points_and_from_the_rollup(station: Station) -> None:
    query = target(station, "fieldstation-overview", "Lab air (t)")
    kw = {"from_ms": station.T - 2 * DAY, "to_ms": station.T, "interval": "1h"}
    raw = {r["time"]: r["mean_value"] for r in rows(station, query, rp="raw", **kw)}
    rollup = {r["time"]: r["mean_mean_value"] for r in rows(station, query, rp="rollup_1m", **kw)}
    assert len(raw) >= 47 and raw.keys() == rollup.keys()
    assert all(math.isclose(raw[t], rollup[t], rel_tol=1e-9) for t in raw)


# -- UPS ----------------------------------------------------------------------------------------------


def test_a_day_with_90_minutes_on_battery_is_93_75_percent_on_wall_power(station: Station) -> None:
    day = {"from_ms": station.T - DAY, "to_ms": station.T}
    assert only(rows(station, target(station, "fieldstation-ups", "Wall-power uptime"), **day)) == 93.75
    assert only(rows(station, target(station, "fieldstation-ups", "System uptime"), **day)) == 100.0
    assert only(rows(station, target(station, "fieldstation-ups", "Time on battery"), **day)) == 90 * 60
    assert only(rows(station, target(station, "fieldstation-ups", "Power cuts"), **day)) == 1


@pytest.mark.parametrize(("label", "seconds"), [("1 min", 60), ("1 h", 3600), ("24 h", 86400), ("7 d", 7 * 86400),
                                                ("30 d", 30 * 86400)])
def test_load_averages_match_the_means_computed_here(station: Station, label: str, seconds: int) -> None:
    at = station.T  # the queries' now()
    loads = [load for t, load, _, _ in station.ups if t > at - seconds * 1000]
    expected = sum(loads) / len(loads)
    percent = alias(station, "fieldstation-ups", "Load, averaged over the last …", label)
    watts = alias(station, "fieldstation-ups", "Power, averaged over the last …", label)
    kw = {"from_ms": station.T - DAY, "to_ms": at}
    assert math.isclose(only(rows(station, percent, **kw)), expected, rel_tol=1e-9)
    assert math.isclose(only(rows(station, watts, **kw)), expected * 9, rel_tol=1e-9)  # 900 W rated


def test_runtime_to_shutdown_and_outage_events(station: Station) -> None:
    first, last = station.outage
    at = last  # the end of the outage: charge at its lowest
    charge = next(c for t, _, _, c in station.ups if t == at)
    runtime = 3000.0 * charge / 100
    got = only(rows(station, target(station, "fieldstation-ups", "Runtime to shutdown at 20 %"), from_ms=at - 3600_000,
                    to_ms=at))
    assert math.isclose(got, runtime * (charge - 20) / charge, rel_tol=1e-9)
    events = rows(station, target(station, "fieldstation-ups", "Outage events", "A"), from_ms=station.T - DAY,
                  to_ms=station.T)
    assert [(r["time"], r["event"]) for r in events] == [(first, "power_cut"), (last + MIN, "power_restored")]
    lengths = rows(station, target(station, "fieldstation-ups", "Outage events", "B"), from_ms=station.T - DAY,
                   to_ms=station.T)
    assert [(r["time"], r["outage_s"]) for r in lengths] == [(last + MIN, 5400)]


def _mapped(panel: dict[str, Any], value: str) -> str:
    """The text Grafana shows for ``value`` through the panel's regex value mappings (the first that matches)."""
    import re

    for m in panel["fieldConfig"]["defaults"]["mappings"]:
        if re.fullmatch(m["options"]["pattern"], value):
            return str(m["options"]["result"]["text"])
    return value


def test_status_charge_load_and_runtime_now_as_the_ups_page_showed(station: Station) -> None:
    """What the replaced UPS statistics page showed first: charge | ON WALL POWER (or ON BATTERY), load right now,
    and while discharging the runtime left."""
    boards, _ = load_rendered(station.outdir)
    status = next(p for p in boards["fieldstation-ups"]["panels"] if p["title"] == "Status")
    _, last = station.outage
    for at, text, charge in ((station.T, "ON WALL POWER", 100.0), (last, "ON BATTERY", 100 - 90 * 0.75)):
        kw = {"from_ms": at - 3600_000, "to_ms": at}
        assert _mapped(status, only(rows(station, target(station, "fieldstation-ups", "Status"), **kw))) == text
        assert only(rows(station, target(station, "fieldstation-ups", "Charge"), **kw)) == charge
        latest = max(t for t, *_ in station.ups if t <= at)
        load = next(ld for t, ld, _, _ in station.ups if t == latest)
        assert only(rows(station, target(station, "fieldstation-ups", "Load now"), **kw)) == load
    runtime_panel = next(p for p in boards["fieldstation-ups"]["panels"] if p["title"] == "Runtime left on battery")
    on_battery = rows(station, target(station, "fieldstation-ups", "Runtime left on battery"), from_ms=last - 3600_000,
                      to_ms=last)
    assert math.isclose(only(on_battery), 3000.0 * (100 - 90 * 0.75) / 100, rel_tol=1e-9)
    # On wall power: no value (Grafana shows the panel's noValue), though the range holds the outage's readings.
    for at in (station.T, last + 3 * MIN):
        assert rows(station, target(station, "fieldstation-ups", "Runtime left on battery"), from_ms=at - DAY,
                    to_ms=at) == []
        to_shutdown = rows(station, target(station, "fieldstation-ups", "Runtime to shutdown at 20 %"),
                           from_ms=at - DAY, to_ms=at)
        assert all(v is None for r in to_shutdown for k, v in r.items() if k != "time")  # Grafana: noValue
    assert runtime_panel["fieldConfig"]["defaults"]["noValue"] == "on wall power"


# -- energy -------------------------------------------------------------------------------------------


def local_day(t_ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(t_ms / 1000, PARIS).date()


def test_energy_per_day_is_the_counter_difference_and_cost_follows_the_tariff(station: Station) -> None:
    start = dt.datetime.combine(local_day(station.counters[0][0]) + dt.timedelta(days=1), dt.time(), PARIS)
    from_ms = int(start.timestamp() * 1000)
    # Independently: each local day's energy is its last counter value minus the previous day's last one.
    last_of: dict[dt.date, float] = {}
    for t, kwh in station.counters:
        last_of[local_day(t)] = kwh
    days = sorted(d for d in last_of if d >= start.date())
    expected = {d: last_of[d] - last_of[d - dt.timedelta(days=1)] for d in days}
    got = rows(station, target(station, "fieldstation-energy", "active_energy per day"), from_ms=from_ms,
               to_ms=station.T)
    by_day = {local_day(r["time"]): r["sum"] for r in got}
    assert by_day.keys() == expected.keys()
    assert all(math.isclose(by_day[d], expected[d], rel_tol=1e-9) for d in days), (by_day, expected)
    # The counter crosses 655.35 kWh in the window: nothing wrapped.
    assert min(k for _, k in station.counters) < 655.35 < max(k for _, k in station.counters)
    # Cost per day and tariff, against the accounting of each increment by its local hour.
    cost: dict[tuple[dt.date, str], float] = {}
    for (_, before), (t, after) in pairwise(station.counters):
        kwh = after - before
        hour = dt.datetime.fromtimestamp(t / 1000, PARIS).hour
        tariff, price = ("peak", 0.30) if 7 <= hour < 22 else ("offpeak", 0.15)
        key = (local_day(t), tariff)
        cost[key] = cost.get(key, 0.0) + kwh * price
    got_cost = rows(station, target(station, "fieldstation-energy", "Cost of active_energy per day, by tariff"),
                    from_ms=from_ms, to_ms=station.T)
    for r in got_cost:
        key = (local_day(r["time"]), r["tariff"])
        assert math.isclose(r["sum"], cost.get(key, 0.0), rel_tol=1e-9, abs_tol=1e-12), key


def test_energy_today_stat_reads_from_local_midnight(station: Station) -> None:
    midnight = dt.datetime.combine(local_day(station.T), dt.time(), PARIS)
    m_ms = int(midnight.timestamp() * 1000)
    before = [k for t, k in station.counters if t < m_ms]
    expected = station.counters[-1][1] - before[-1]
    got = only(rows(station, target(station, "fieldstation-energy", "Active energy today"), from_ms=m_ms,
                    to_ms=station.T))
    assert math.isclose(got, expected, rel_tol=1e-9)


# -- alert rules --------------------------------------------------------------------------------------


def rule(st: Station, title: str) -> dict[str, Any]:
    _, rules = load_rendered(st.outdir)
    return next(r for r in rules if r["title"] == title)


def test_limit_rule_fires_above_the_limit_and_not_below(station: Station) -> None:
    high, low = rule(station, "t value above 25 °C"), rule(station, "t value below 15 °C")
    assert evaluate_rule(station.influx, DB, high, station.T) == "Alerting"  # the last 10 minutes at 30 °C
    assert evaluate_rule(station.influx, DB, high, station.T - 60 * MIN) == "Normal"
    assert evaluate_rule(station.influx, DB, low, station.T) == "Normal"


def test_stale_rule_alerts_on_no_data(station: Station) -> None:
    r = rule(station, "t sends no data")
    assert r["noDataState"] == "Alerting"
    assert evaluate_rule(station.influx, DB, r, station.T) == "Normal"
    assert evaluate_rule(station.influx, DB, r, station.T + 30 * MIN) == "Alerting"  # silence is not all clear


def test_ups_rules_follow_the_outage(station: Station) -> None:
    first, last = station.outage
    cut, restored = rule(station, "ups: power cut"), rule(station, "ups: power restored")
    low, over = rule(station, "ups: battery at or below 40 %"), rule(station, "ups: load at or above 90 %")
    assert evaluate_rule(station.influx, DB, cut, first + 30_000) == "Alerting"
    assert evaluate_rule(station.influx, DB, cut, station.T) == "Normal"
    assert evaluate_rule(station.influx, DB, restored, last + MIN + 30_000) == "Alerting"
    assert evaluate_rule(station.influx, DB, restored, station.T) == "Normal"
    assert evaluate_rule(station.influx, DB, low, last + 1000) == "Alerting"  # 100 − 90 × 0.75 = 32.5 %
    assert evaluate_rule(station.influx, DB, low, first + 1000) == "Normal"
    assert evaluate_rule(station.influx, DB, over, station.spike + 30_000) == "Alerting"
    assert evaluate_rule(station.influx, DB, over, station.spike + 5 * MIN) == "Normal"


def test_backup_rule_alerts_when_the_last_good_backup_is_too_old(station: Station) -> None:
    r = rule(station, "No good backup for 26h")
    assert evaluate_rule(station.influx, DB, r, station.T) == "Normal"
    assert evaluate_rule(station.influx, DB, r, station.T + 25 * 3600_000) == "Alerting"  # 27 h after it
    last = only(rows(station, target(station, "fieldstation-agent", "Last backup"), from_ms=station.T - DAY,
                     to_ms=station.T))
    assert last == 123456789


def test_a_failed_restore_drill_alerts_for_a_week(station: Station) -> None:
    r = rule(station, "The restore drill failed")
    assert evaluate_rule(station.influx, DB, r, station.T) == "Normal"  # the seeded drill passed
    failed = station.T + 3600_000  # after every other test's window
    station.influx.write([f"fieldstation_backup,kind=restore_drill ok=false,bytes=0i,duration_s=3.5 {failed * 10**6}"],
                         DB, "raw")
    assert evaluate_rule(station.influx, DB, r, failed + 60_000) == "Alerting"
    assert evaluate_rule(station.influx, DB, r, failed + 8 * DAY) == "Normal"


def test_a_failed_remote_shutdown_alerts(station: Station) -> None:
    r = rule(station, "A remote shutdown failed")
    assert evaluate_rule(station.influx, DB, r, station.T) == "Alerting"
    assert evaluate_rule(station.influx, DB, r, station.T + 2 * 3600_000) == "Normal"  # an hour later, all clear


def _stale_silence(st: Station, name: str) -> int:
    """An instant after the stale window of sensor ``name`` has passed without a reading."""
    r = rule(st, f"{name} sends no data")
    return st.T + r["data"][0]["relativeTimeRange"]["from"] * 1000 + 10 * MIN


def scenarios(st: Station) -> dict[str, tuple[int, int]]:
    """Rule title → (an instant it alerts, an instant it is normal), for every rule the station renders."""
    first, last = st.outage
    drill_failed = st.T + 3600_000  # as in test_a_failed_restore_drill_alerts_for_a_week
    cold = st.T + 3 * 3600_000  # a reading of 10 °C, below t's low limit
    st.influx.write([f"fieldstation_backup,kind=restore_drill ok=false,bytes=0i,duration_s=3.5 {drill_failed * 10**6}",
                     f"simulated,sensor=t,unit=°C value=10.0 {cold * 10**6}"], DB, "raw")
    out = {
        "t value above 25 °C": (st.T, st.T - 60 * MIN),
        "t value below 15 °C": (cold, st.T),
        "ups: power cut": (first + 30_000, st.T),
        "ups: power restored": (last + MIN + 30_000, st.T),
        "ups: battery at or below 40 %": (last + 1000, first + 1000),
        "ups: load at or above 90 %": (st.spike + 30_000, st.spike + 5 * MIN),
        "A remote shutdown failed": (st.T, st.T + 2 * 3600_000),
        "No good backup for 26h": (st.T + 25 * 3600_000, st.T),
        "The restore drill failed": (drill_failed + 60_000, st.T),
    }
    for name in ("ups", "mains_meter", "pi", "t"):
        out[f"{name} sends no data"] = (_stale_silence(st, name), st.T)
    return out


def test_every_rendered_rule_fires_and_resolves(station: Station) -> None:
    """Each rule the station renders alerts at one instant and is normal at another: none can cry wolf for ever or
    never speak; a new rule without a scenario here fails."""
    _, rules = load_rendered(station.outdir)
    cases = scenarios(station)
    assert sorted(r["title"] for r in rules) == sorted(cases)
    for r in rules:
        fire, calm = cases[r["title"]]
        assert (evaluate_rule(station.influx, DB, r, fire), evaluate_rule(station.influx, DB, r, calm)) == (
            "Alerting", "Normal"), r["title"]


def test_campaign_dashboards_read_the_files_policy(station: Station, tmp_path: Path) -> None:
    from fieldstation.ingest.inbox import IngestSettings, SourceSettings

    t = (station.T - 60 * MIN) * 1_000_000
    station.influx.write([
        f"mv2,client=acme,campaign=winter,device=02001311,channel=Voie1,unit=W value=1200.5 {t}",
        f"mv2,client=acme,campaign=winter,device=02001311,channel=Ph\\ 1,unit=V value=236.14 {t}",
        f"mv2,client=other,campaign=winter,device=02009999,channel=Voie1,unit=W value=9.0 {t}",
    ], DB, "files")
    ingest = IngestSettings(root=tmp_path, sources=[SourceSettings(name="mv2", format="mv2")])
    (ingest.archive / "mv2/acme/winter").mkdir(parents=True)
    out = tmp_path / "prov"
    render(out, load_sensors(station.outdir.parent / "config.py"), GS, TARIFF, ingest)
    board = json.loads((out / "dashboards/fieldstation-campaigns/acme/winter.json").read_text())
    by_title = {p["title"]: p["targets"][0]["query"] for p in board["panels"] if p["type"] != "row"}
    kw = {"from_ms": station.T - DAY, "to_ms": station.T}
    power = rows(station, by_title["Power per channel"], **kw)
    assert [(r["device"], r["channel"], r["mean"]) for r in power] == [("02001311", "Voie1", 1200.5)]  # not "other"
    voltage = rows(station, by_title["Voltage per phase"], **kw)
    assert [r["mean"] for r in voltage] == [236.14]
    last = rows(station, by_title["Last value per channel"], **kw)
    assert sorted(r["last"] for r in last) == [236.14, 1200.5]
