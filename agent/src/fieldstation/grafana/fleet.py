"""A fleet's central Grafana: VictoriaMetrics as a Prometheus datasource, the fleet dashboard and the "station went
silent" alert, rendered with the rest when grafana.toml has a ``[fleet]`` section (role central).

Everything here reads what the stations already write about themselves, tagged ``station=<host>`` on the way to
the central server (fieldstation.fleet): VictoriaMetrics names a field ``<measurement>_<field>`` and turns
booleans into 1 and 0. The queries are MetricsQL (VictoriaMetrics' superset of PromQL): ``tlast_over_time`` gives the
time of a series' last sample, ``count_le_over_time`` counts samples at or below a value.
"""

from __future__ import annotations

from typing import Any

from fieldstation.grafana import panels as p
from fieldstation.grafana.alerting import expression_steps
from fieldstation.grafana.settings import GrafanaSettings, seconds

DATASOURCE_UID = "fieldstation-victoriametrics"
DATASOURCE = {"type": "prometheus", "uid": DATASOURCE_UID}
DASHBOARD_UID = "fieldstation-fleet"
SILENT_RULE_UID = "fs-fleet-station-silent"

#: The agent writes its spool's depth every health interval whatever its sensors do: the station's heartbeat.
HEARTBEAT = "fieldstation_spool_depth"
SEL = 'station=~"$station"'

#: What each panel and the alert ask VictoriaMetrics: (title, MetricsQL, legend, Grafana unit, description).
QUERIES: dict[str, tuple[str, str, str, str, str]] = {
    "silence": (
        "Since the last reading",
        f"time() - max by (station) (tlast_over_time({HEARTBEAT}{{{SEL}}}[1d]))",
        "{{station}}",
        "s",
        "Seconds since each station's last health reading reached the central server (every 10 s when all is well).",
    ),
    "backlog": (
        "Spool backlog towards the central server",
        f'max by (station) ({HEARTBEAT}{{sink="central", {SEL}}})',
        "{{station}}",
        "short",
        "Readings a station holds for the central server; it grows while the link or the server is down, and drains "
        "in order when it is back.",
    ),
    "oldest": (
        "Oldest unsent reading",
        f'max by (station) (fieldstation_spool_oldest_unsent_age{{sink="central", {SEL}}})',
        "{{station}}",
        "s",
        "Age of the oldest reading a station has not yet delivered to the central server.",
    ),
    "stale": (
        "Stale sensors",
        f"sum by (station) (last_over_time(fieldstation_sensor_stale{{{SEL}}}[1d]))",
        "{{station}}",
        "short",
        "Sensors without a fresh reading, per station (their stale_after), as of its last health reading.",
    ),
    "failed": (
        "Failed backups and restore drills (7 days)",
        f"sum by (station, kind) (count_le_over_time(fieldstation_backup_ok{{{SEL}}}[7d], 0))",
        "{{station}} {{kind}}",
        "short",
        "Backups and weekly restore drills that failed in the last 7 days, per station.",
    ),
    "sd_writes": (
        "SD-card writes per day",
        f"sum by (station) (sum_over_time(pi_sd_bytes_written{{{SEL}}}[1d]))",
        "{{station}}",
        "bytes",
        "Bytes written to each station's SD card over the last 24 h (the pi sensor's sd_bytes_written).",
    ),
    "agent_writes": (
        "Agent's own writes per day",
        f"max by (station) (fieldstation_agent_bytes_written_per_day{{{SEL}}})",
        "{{station}}",
        "bytes",
        "What the agent itself writes per day (its spool and state), as it reports it.",
    ),
}


def target(ref: str, key: str, *, instant: bool = False) -> dict[str, Any]:
    _, expr, legend, _, _ = QUERIES[key]
    t: dict[str, Any] = {"refId": ref, "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
    if instant:
        t |= {"instant": True, "range": False, "format": "table"}
    return t


def _panel(kind: str, key: str, **kw: Any) -> dict[str, Any]:
    title, _, _, unit, description = QUERIES[key]
    instant = kind == "stat"
    targets = [target("A", key, instant=instant)]
    if kind == "stat":
        panel = p.stat(title, targets, "", description=description, **kw)
    else:
        panel = p.timeseries(title, targets, "", description=description, **kw)
    panel["datasource"] = DATASOURCE
    panel["fieldConfig"]["defaults"]["unit"] = unit
    return panel


def datasource(gs: GrafanaSettings) -> dict[str, Any]:
    assert gs.fleet is not None
    return {
        "name": "Fleet (VictoriaMetrics)",
        "uid": DATASOURCE_UID,
        "orgId": 1,
        "type": "prometheus",
        "access": "proxy",
        "url": gs.fleet.url,
        "isDefault": False,
        "editable": False,
        "jsonData": {"httpMethod": "POST", "timeInterval": "10s", "prometheusType": "Prometheus"},
    }


def dashboard(gs: GrafanaSettings) -> dict[str, Any]:
    grid = p.Grid()
    grid.row("Stations")
    grid.add(_panel("stat", "silence", decimals=0), 8, 5)
    grid.add(_panel("stat", "stale", decimals=0), 8, 5)
    grid.add(_panel("stat", "failed", decimals=0), 8, 5)
    grid.row("Delivery to the central server")
    grid.add(_panel("timeseries", "backlog"), 12, 8)
    grid.add(_panel("timeseries", "oldest"), 12, 8)
    grid.row("Flash wear")
    grid.add(_panel("timeseries", "sd_writes"), 12, 8)
    grid.add(_panel("timeseries", "agent_writes"), 12, 8)
    station = {
        "name": "station",
        "label": "Station",
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": f"label_values({HEARTBEAT}, station)", "refId": "station"},
        "multi": True,
        "includeAll": True,
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
        "sort": 1,
    }
    return p.dashboard(
        DASHBOARD_UID,
        "Fleet",
        grid.done(),
        description="Every station's last reading, delivery backlog, stale sensors, failed backups and flash wear, "
        "from the health readings the stations write to the central server.",
        timezone=gs.timezone,
        time_from="now-24h",
        variables=[station],
    )


def silent_rule(gs: GrafanaSettings) -> dict[str, Any]:
    """One alert per station (by its label) whose last reading is older than ``fleet.silent_after``; a fleet with
    none at all alerts too (no data)."""
    assert gs.fleet is not None
    limit = seconds(gs.fleet.silent_after)
    expr = QUERIES["silence"][1].replace(f"{{{SEL}}}", "")
    return {
        "uid": SILENT_RULE_UID,
        "title": "A station went silent",
        "condition": "C",
        "data": [
            {
                "refId": "A",
                "relativeTimeRange": {"from": 600, "to": 0},
                "datasourceUid": DATASOURCE_UID,
                "model": {"refId": "A", "expr": expr, "instant": True, "intervalMs": 1000, "maxDataPoints": 43200},
            },
            *expression_steps("last", ("gt", limit)),
        ],
        "noDataState": "Alerting",
        "execErrState": "Error",
        "for": "0s",
        "isPaused": False,
        "labels": {"kind": "fleet"},
        "annotations": {
            "summary": "Station {{ $labels.station }} sent nothing for " + gs.fleet.silent_after,
            "description": "Its agent's health readings stopped reaching the central server: the station, its "
            "network or its credential (vmauth refuses a revoked one). It keeps its readings in its spool meanwhile.",
            "threshold": f"a reading every {gs.fleet.silent_after}",
            "value": "{{ if $values.B }}{{ humanizeDuration $values.B.Value }}{{ else }}no data{{ end }}",
            "link": f"{gs.url}/d/{DASHBOARD_UID}",
        },
    }


def rules_group(gs: GrafanaSettings) -> dict[str, Any]:
    return {
        "orgId": 1,
        "name": "fleet",
        "folder": gs.alerts.folder,
        "interval": gs.alerts.evaluate_every,
        "rules": [silent_rule(gs)],
    }
