"""The dashboards: overview (every sensor, in config.py's groups), UPS, energy, Pi health, agent health.

Each is a function of the sensors and the settings, returning Grafana dashboard JSON as a dict with fixed uids,
so that the same config gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fieldstation.energy import EnergySettings
from fieldstation.grafana import queries as q
from fieldstation.grafana import units
from fieldstation.grafana.panels import (
    DATASOURCE,
    Grid,
    dashboard,
    gauge,
    stat,
    table,
    target,
    timeseries,
    with_units,
)
from fieldstation.grafana.settings import GrafanaSettings
from fieldstation.influx_setup import RP_VARIABLE_QUERY
from fieldstation.sensor import Sensor

UIDS = {
    "overview": "fieldstation-overview",
    "ups": "fieldstation-ups",
    "energy": "fieldstation-energy",
    "pi": "fieldstation-pi",
    "agent": "fieldstation-agent",
}
LOAD_WINDOWS = (("1 min", "1m"), ("1 h", "1h"), ("24 h", "24h"), ("7 d", "7d"), ("30 d", "30d"))
NO_DATA_GROUP = "Sensors"


def rp_variable() -> dict[str, Any]:
    """Hidden ``$rp``: refreshed on every time-range change from the ``rp_config`` rows influx setup writes."""
    return {
        "name": "rp",
        "label": "Retention policy",
        "type": "query",
        "datasource": DATASOURCE,
        "query": RP_VARIABLE_QUERY,
        "refresh": 2,
        "hide": 2,
        "includeAll": False,
        "multi": False,
        "sort": 0,
        "current": {"selected": True, "text": "raw", "value": "raw"},
        "options": [],
    }


def links() -> list[dict[str, Any]]:
    return [
        {
            "title": "Fieldstation",
            "type": "dashboards",
            "tags": ["fieldstation"],
            "asDropdown": False,
            "includeVars": False,
            "keepTime": True,
            "targetBlank": False,
            "icon": "external link",
            "tooltip": "",
            "url": "",
        }
    ]


def _range(sensor: Sensor, field: str) -> tuple[float, float] | None:
    vr = sensor.valid_range
    return vr.get(field) if isinstance(vr, dict) else vr


def groups(sensors: Iterable[Sensor]) -> dict[str, list[Sensor]]:
    out: dict[str, list[Sensor]] = {}
    for s in sensors:
        out.setdefault(s.group or NO_DATA_GROUP, []).append(s)
    return out


def _title(sensor: Sensor) -> str:
    return f"{sensor.description} ({sensor.name})" if sensor.description else sensor.name


def sensor_panels(sensor: Sensor) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One gauge per field (its own unit, its limits as thresholds, its valid range as min … max) and a time series
    of every field, for one sensor. Every panel carries the sensor's description."""
    fields = sensor.dashboard_fields()
    m = sensor.measurement_name
    units = {f: sensor.unit_of(f) for f in fields}
    single = len(fields) == 1
    alias = (lambda f: sensor.name) if single else (lambda f: f)
    about = sensor.description or sensor.name
    gauges = [
        gauge(
            about if single else f"{about}: {f}",
            [target("A", q.last(m, sensor.name, f), alias=alias(f))],
            units[f],
            description=_title(sensor) + ("" if single else f", {f}"),
            limits=sensor.limits.get(f),
            minmax=_range(sensor, f),
        )
        for f in fields
    ]
    series = [target(chr(65 + i), q.series(m, sensor.name, f), alias=alias(f)) for i, f in enumerate(fields)]
    limits = sensor.limits.get(fields[0]) if single else None
    ts = timeseries(_title(sensor), series, units[fields[0]], description=about, limits=limits)
    if not single and len(set(units.values())) > 1:
        with_units(ts, units)
    return gauges, ts


def overview(sensors: list[Sensor], gs: GrafanaSettings) -> dict[str, Any]:
    grid = Grid()
    for name, members in groups(sensors).items():
        grid.row(name)
        for s in members:
            gauges, ts = sensor_panels(s)
            for g in gauges:
                grid.add(g, 4, 7)
            grid.add(ts, 8, 7)
    return dashboard(
        UIDS["overview"],
        "Fieldstation overview",
        grid.done(),
        description="Every sensor of config.py, in its groups: the last value of each field and its history.",
        timezone=gs.timezone,
        variables=[rp_variable()],
        links=links(),
    )


STATUS_MAPPINGS = [
    {
        "type": "regex",
        "options": {
            "pattern": r".*\bOB\b.*\bLB\b.*|.*\bLB\b.*\bOB\b.*",
            "result": {"text": "ON BATTERY, LOW", "color": "dark-red", "index": 0},
        },
    },
    {
        "type": "regex",
        "options": {"pattern": r".*\bOB\b.*", "result": {"text": "ON BATTERY", "color": "red", "index": 1}},
    },
    {
        "type": "regex",
        "options": {"pattern": r".*\bOL\b.*", "result": {"text": "ON WALL POWER", "color": "green", "index": 2}},
    },
]
BOOL_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "true": {"text": "YES", "color": "red", "index": 0},
            "false": {"text": "no", "color": "green", "index": 1},
        },
    },
]


#: A UPS's runtime left is shown while its last on-battery reading is at most this many read intervals old.
RUNTIME_FRESH_INTERVALS = 2.5


def ups(nuts: list[Sensor], gs: GrafanaSettings) -> dict[str, Any] | None:
    if not nuts:
        return None
    grid = Grid()
    for s in nuts:
        cfg = gs.ups_for(s.name)
        m, n = s.measurement_name, s.name
        grid.row(_title(s))
        grid.add(stat("Status", [target("A", q.last(m, n, "status"))], "", mappings=STATUS_MAPPINGS), 4, 5)
        charge = gauge(
            "Charge",
            [target("A", q.last(m, n, "battery_charge"), alias="charge")],
            "%",
            limits=(cfg.shutdown_charge, 101),
            minmax=(0, 100),
        )
        grid.add(charge, 4, 5)
        fresh = RUNTIME_FRESH_INTERVALS * s.interval
        grid.add(
            stat(
                "Runtime left on battery",
                [target("A", q.runtime_left(m, n, fresh))],
                "s",
                no_value="on wall power",
                description="NUT's estimate (battery.runtime), shown only while the UPS runs on battery.",
            ),
            4,
            5,
        )
        grid.add(
            stat(
                f"Runtime to shutdown at {cfg.shutdown_charge:g} %",
                [target("A", q.runtime_to_shutdown(m, n, cfg.shutdown_charge, fresh))],
                "s",
                no_value="on wall power",
                description="The runtime left scaled to the charge left above the shutdown threshold, on battery.",
            ),
            4,
            5,
        )
        grid.add(stat("Load now", [target("A", q.last(m, n, "ups_load"))], "%"), 4, 5)
        power = [target("A", q.last(m, n, "ups_realpower"), alias="ups.realpower")]
        if cfg.rated_power_w:
            scale = cfg.rated_power_w / 100
            power.append(target("B", q.mean_since(m, n, "ups_load", "1m", scale), alias="load × rated power"))
        grid.add(
            stat(
                "Power now",
                power,
                "W",
                description="ups.realpower, or load × the rated power from the "
                "inventory when the UPS does not report watts.",
            ),
            4,
            5,
        )
        averages = [
            target(chr(65 + i), q.mean_since(m, n, "ups_load", w), alias=label)
            for i, (label, w) in enumerate(LOAD_WINDOWS)
        ]
        grid.add(stat("Load, averaged over the last …", averages, "%", decimals=2), 12, 5)
        if cfg.rated_power_w:
            watts = [
                target(chr(65 + i), q.mean_since(m, n, "ups_load", w, cfg.rated_power_w / 100), alias=label)
                for i, (label, w) in enumerate(LOAD_WINDOWS)
            ]
            grid.add(stat("Power, averaged over the last …", watts, "W", decimals=2), 12, 5)
        grid.add(
            stat(
                "System uptime",
                [target("A", q.uptime_percent(m, n, s.interval))],
                "%",
                decimals=4,
                description="Share of the time range with readings from the UPS: the station was up.",
            ),
            6,
            5,
        )
        grid.add(
            stat(
                "Wall-power uptime",
                [target("A", q.uptime_percent(m, n, s.interval, on_line=True))],
                "%",
                decimals=4,
                description="Share of the time range on wall power (OL).",
            ),
            6,
            5,
        )
        grid.add(
            stat("Power cuts", [target("A", q.count_where(m, n, '"event" =~ /power_cut/', "event"))], "", no_value="0"),
            6,
            5,
        )
        on_battery = q.count_where(m, n, '"on_battery" = true', scale=s.interval)
        grid.add(stat("Time on battery", [target("A", on_battery)], "s", no_value="0"), 6, 5)
        grid.add(
            timeseries(
                "Charge and load",
                [
                    target("A", q.series(m, n, "battery_charge"), alias="charge"),
                    target("B", q.series(m, n, "ups_load"), alias="load"),
                ],
                "%",
            ),
            12,
            8,
        )
        series_w = [target("A", q.series(m, n, "ups_realpower"), alias="ups.realpower")]
        if cfg.rated_power_w:
            series_w += [
                target(ref, query, alias="load × rated power")
                for ref, query in zip("BC", q.series_scaled(m, n, "ups_load", cfg.rated_power_w / 100), strict=True)
            ]
        grid.add(timeseries("Power", series_w, "W"), 12, 8)
        events = [target("A", q.outage_events(m, n), table=True), target("B", q.outage_lengths(m, n), table=True)]
        grid.add(
            table(
                "Outage events",
                events,
                "",
                description="Status changes the agent saw: power_cut, "
                "power_restored (with the outage's length in seconds), low_battery, overload.",
            ),
            24,
            8,
        )
    return dashboard(
        UIDS["ups"],
        "UPS",
        grid.done(),
        description="UPS status, load, uptime and outages, through NUT.",
        timezone=gs.timezone,
        time_from="now-24h",
        variables=[rp_variable()],
        links=links(),
    )


def energy(meters: list[Sensor], gs: GrafanaSettings, es: EnergySettings) -> dict[str, Any] | None:
    counted = [(s, [f for f in s.dashboard_fields() if f in es.counters and s.unit_of(f) == "kWh"]) for s in meters]
    if not any(c for _, c in counted):
        return None
    currency = units.currency_unit(es.currency)
    grid = Grid()
    for s, counters in counted:
        if not counters:
            continue
        n = s.name
        power = [f for f in s.dashboard_fields() if s.unit_of(f) == "W"]
        grid.row(_title(s))
        if power:
            grid.add(stat("Power now", [target("A", q.last(s.measurement_name, n, power[0]))], "W"), 4, 5)
        for c in counters:
            for label, since in (("today", "now/d"), ("this week", "now/w"), ("this month", "now/M")):
                grid.add(
                    stat(
                        f"{c.replace('_', ' ').capitalize()} {label}",
                        [target("A", q.energy_total(n, c))],
                        "kWh",
                        decimals=2,
                        time_from=since,
                        no_value="0",
                    ),
                    3,
                    5,
                )
            for label, since in (("today", "now/d"), ("this month", "now/M")):
                cost = stat(
                    f"Cost {label}",
                    [target("A", q.energy_total(n, c, field="cost"))],
                    "",
                    decimals=2,
                    time_from=since,
                    no_value="0",
                    unit_id=currency,
                )
                grid.add(cost, 3, 5)
        if power:
            grid.add(
                timeseries(
                    "Power",
                    [target(chr(65 + i), q.series(s.measurement_name, n, f), alias=f) for i, f in enumerate(power)],
                    "W",
                ),
                24,
                8,
            )
        for c in counters:
            grid.add(
                timeseries(
                    f"{c} per day", [target("A", q.energy_per(n, c, "1d", es.timezone), alias="kWh")], "kWh", bars=True
                ),
                12,
                8,
            )
            grid.add(
                timeseries(
                    f"{c} per week (from Monday)",
                    [target("A", q.energy_per(n, c, "1w,4d", es.timezone), alias="kWh")],
                    "kWh",
                    bars=True,
                ),
                12,
                8,
            )
            cost_daily = timeseries(
                f"Cost of {c} per day, by tariff",
                [target("A", q.energy_per(n, c, "1d", es.timezone, field="cost", by_tariff=True), alias="$tag_tariff")],
                "",
                bars=True,
                stacked=True,
                unit_id=currency,
            )
            grid.add(cost_daily, 24, 8)
    return dashboard(
        UIDS["energy"],
        "Energy",
        grid.done(),
        description=f"Power, energy and cost ({es.currency}, tariff clock in {es.timezone}).",
        timezone=gs.timezone,
        time_from="now-7d",
        variables=[rp_variable()],
        links=links(),
    )


def pi(pis: list[Sensor], gs: GrafanaSettings) -> dict[str, Any] | None:
    if not pis:
        return None
    grid = Grid()
    for s in pis:
        m, n = s.measurement_name, s.name
        disks = [f for f in s.dashboard_fields() if f.startswith("disk_used_percent_")]
        grid.row(_title(s))
        grid.add(stat("Uptime", [target("A", q.last(m, n, "uptime"))], "s"), 4, 5)
        grid.add(
            gauge("SoC temperature", [target("A", q.last(m, n, "soc_temp"))], "°C", limits=(0, 80), minmax=(20, 90)),
            4,
            5,
        )
        grid.add(
            stat(
                "Under-voltage now",
                [target("A", q.last(m, n, "under_voltage"))],
                "",
                mappings=BOOL_MAPPINGS,
                description="vcgencmd get_throttled, bit 0.",
            ),
            4,
            5,
        )
        grid.add(
            stat(
                "Under-voltage since boot",
                [target("A", q.last(m, n, "under_voltage_occurred"))],
                "",
                mappings=BOOL_MAPPINGS,
                description="vcgencmd get_throttled, bit 16: replace the power supply.",
            ),
            4,
            5,
        )
        grid.add(stat("Throttled now", [target("A", q.last(m, n, "throttled"))], "", mappings=BOOL_MAPPINGS), 4, 5)
        grid.add(
            stat(
                "Disk used",
                [
                    target(chr(65 + i), q.last(m, n, f), alias=f.removeprefix("disk_used_percent_"))
                    for i, f in enumerate(disks)
                ]
                or [target("A", q.last(m, n, "disk_used_percent_root"))],
                "%",
                decimals=1,
            ),
            4,
            5,
        )
        grid.add(
            timeseries(
                "CPU and memory",
                [
                    target("A", q.series(m, n, "cpu_percent"), alias="cpu"),
                    target("B", q.series(m, n, "mem_used_percent"), alias="memory"),
                ],
                "%",
            ),
            12,
            8,
        )
        grid.add(timeseries("SoC temperature", [target("A", q.series(m, n, "soc_temp"), alias="soc")], "°C"), 12, 8)
        grid.add(
            timeseries(
                "Load average",
                [target(chr(65 + i), q.series(m, n, f), alias=f) for i, f in enumerate(("load1", "load5", "load15"))],
                "",
            ),
            12,
            8,
        )
        sd = q.sum_series(m, n, "sd_bytes_written")
        grid.add(
            timeseries(
                "Written to the SD card",
                [target("A", sd, alias="bytes")],
                "B",
                bars=True,
                description="Bytes written per bucket: SD cards wear out.",
            ),
            12,
            8,
        )
    return dashboard(
        UIDS["pi"],
        "Raspberry Pi",
        grid.done(),
        description="The station's own health.",
        timezone=gs.timezone,
        time_from="now-24h",
        variables=[rp_variable()],
        links=links(),
    )


def agent(gs: GrafanaSettings) -> dict[str, Any]:
    grid = Grid()
    grid.row("Store and forward")
    grid.add(
        timeseries("Spool depth (unsent readings)", [target("A", q.spool("depth"), alias="$tag_sink")], "count"), 12, 8
    )
    grid.add(
        timeseries("Oldest unsent reading", [target("A", q.spool("oldest_unsent_age"), alias="$tag_sink")], "s"), 12, 8
    )
    grid.row("Sensors")
    grid.add(
        timeseries(
            "Failed reads per sensor", [target("A", q.errors_per_sensor(), alias="$tag_sensor")], "count", bars=True
        ),
        12,
        8,
    )
    stale = table(
        "Sensors now",
        [target("A", q.stale_sensors(), table=True)],
        "",
        description="stale: no good reading for stale_after intervals.",
    )
    stale["fieldConfig"]["defaults"]["mappings"] = BOOL_MAPPINGS
    grid.add(stale, 12, 8)
    if gs.backups:
        _backup_row(grid)
    return dashboard(
        UIDS["agent"],
        "Fieldstation agent",
        grid.done(),
        description="The agent's own health: spool, sinks, sensor errors" + (", backups." if gs.backups else "."),
        timezone=gs.timezone,
        time_from="now-24h",
        variables=[rp_variable()],
        links=links(),
    )


def _backup_row(grid: Grid) -> None:
    grid.row("Backups")
    for title, kind in (("Last backup", "backup"), ("Last restore drill", "restore_drill")):
        p = stat(
            title,
            [target("A", q.last_backup(kind))],
            "",
            unit_id=units.TIME_AGO,
            fields="/^Time$/",
            no_value="none in 35 days",
        )
        grid.add(p, 12, 5)
