"""Panel builders and the grid: plain dicts in Grafana's dashboard JSON model (schema version 39).

Every panel gets a unit (Grafana's unit id for a sensor's unit from :mod:`.units`, or one of the ids named there for
what is no sensor's unit), a datasource by uid,
and a place on the 24-column grid from :class:`Grid`, which never lets two panels overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fieldstation.grafana.units import grafana_unit

DATASOURCE_UID = "fieldstation-influxdb"
DATASOURCE = {"type": "influxdb", "uid": DATASOURCE_UID}
GRID_WIDTH = 24

def target(ref: str, query: str, *, alias: str = "", table: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {
        "refId": ref,
        "datasource": DATASOURCE,
        "query": query,
        "rawQuery": True,
        "resultFormat": "table" if table else "time_series",
    }
    if alias:
        t["alias"] = alias
    return t


def _thresholds(limits: tuple[float, float] | None) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if limits is not None:
        steps = [
            {"color": "red", "value": None},
            {"color": "green", "value": limits[0]},
            {"color": "red", "value": limits[1]},
        ]
    return {"mode": "absolute", "steps": steps}


def _base(
    kind: str, title: str, targets: list[dict[str, Any]], unit: str, description: str, *, unit_id: str | None = None
) -> dict[str, Any]:
    """``unit``: ours (a sensor's); ``unit_id``: a Grafana id, for what is no sensor's unit."""
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit_id or grafana_unit(unit)}, "overrides": []},
    }


def with_units(panel: dict[str, Any], units: dict[str, str]) -> dict[str, Any]:
    """Per-series units (by alias) on a panel whose series differ."""
    panel["fieldConfig"]["overrides"] = [
        {"matcher": {"id": "byName", "options": name}, "properties": [{"id": "unit", "value": grafana_unit(u)}]}
        for name, u in units.items()
    ]
    return panel


def gauge(
    title: str,
    targets: list[dict[str, Any]],
    unit: str,
    *,
    description: str = "",
    limits: tuple[float, float] | None = None,
    minmax: tuple[float, float] | None = None,
    unit_id: str | None = None,
) -> dict[str, Any]:
    p = _base("gauge", title, targets, unit, description, unit_id=unit_id)
    p["fieldConfig"]["defaults"]["thresholds"] = _thresholds(limits)
    if minmax is not None:
        p["fieldConfig"]["defaults"]["min"], p["fieldConfig"]["defaults"]["max"] = minmax
    p["options"] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showThresholdLabels": False,
        "showThresholdMarkers": limits is not None,
        # The rest of @grafana/schema's required gauge options, at Grafana's defaults: a complete model.
        "orientation": "auto",
        "minVizHeight": 75,
        "minVizWidth": 75,
        "sizing": "auto",
    }
    return p


def stat(
    title: str,
    targets: list[dict[str, Any]],
    unit: str,
    *,
    description: str = "",
    calc: str = "lastNotNull",
    decimals: int | None = None,
    mappings: list[dict[str, Any]] | None = None,
    fields: str = "",
    no_value: str = "",
    time_from: str = "",
    unit_id: str | None = None,
) -> dict[str, Any]:
    p = _base("stat", title, targets, unit, description, unit_id=unit_id)
    defaults = p["fieldConfig"]["defaults"]
    if decimals is not None:
        defaults["decimals"] = decimals
    if mappings:
        defaults["mappings"] = mappings
    if no_value:
        defaults["noValue"] = no_value
    p["options"] = {
        "reduceOptions": {"calcs": [calc], "fields": fields, "values": False},
        "colorMode": "value" if mappings else "none",
        "graphMode": "none",
        "textMode": "auto",
        "justifyMode": "auto",
        "orientation": "auto",
        "showPercentChange": False,
        "percentChangeColorMode": "standard",
        "wideLayout": True,
    }
    if time_from:
        p["timeFrom"] = time_from
    return p


def timeseries(
    title: str,
    targets: list[dict[str, Any]],
    unit: str,
    *,
    description: str = "",
    limits: tuple[float, float] | None = None,
    bars: bool = False,
    stacked: bool = False,
    unit_id: str | None = None,
) -> dict[str, Any]:
    p = _base("timeseries", title, targets, unit, description, unit_id=unit_id)
    custom: dict[str, Any] = {"drawStyle": "bars" if bars else "line", "spanNulls": False}
    if bars:
        custom["fillOpacity"] = 80
    if stacked:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    if limits is not None:
        custom["thresholdsStyle"] = {"mode": "line"}
    p["fieldConfig"]["defaults"]["custom"] = custom
    p["fieldConfig"]["defaults"]["thresholds"] = _thresholds(limits)
    p["options"] = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
        "tooltip": {"mode": "multi", "sort": "none"},
    }
    return p


def table(
    title: str, targets: list[dict[str, Any]], unit: str, *, description: str = "", unit_id: str | None = None
) -> dict[str, Any]:
    p = _base("table", title, targets, unit, description, unit_id=unit_id)
    p["options"] = {"showHeader": True, "frameIndex": 0, "sortBy": [{"displayName": "Time", "desc": True}]}
    return p


@dataclass
class Grid:
    """Places panels left to right in rows of 24 columns; a group starts a new row with a row panel."""

    panels: list[dict[str, Any]] = field(default_factory=list)
    x: int = 0
    y: int = 0
    line_height: int = 0

    def _newline(self) -> None:
        if self.x:
            self.y += self.line_height
        self.x, self.line_height = 0, 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": self.y},
            }
        )
        self.y += 1

    def add(self, panel: dict[str, Any], w: int, h: int) -> None:
        if self.x + w > GRID_WIDTH:
            self._newline()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.line_height = max(self.line_height, h)

    def done(self) -> list[dict[str, Any]]:
        """The panels with ids 1, 2, … in order."""
        for i, p in enumerate(self.panels, 1):
            p["id"] = i
        return self.panels


def dashboard(
    uid: str,
    title: str,
    panels: list[dict[str, Any]],
    *,
    description: str,
    timezone: str,
    time_from: str = "now-6h",
    variables: list[dict[str, Any]] | None = None,
    links: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["fieldstation"],
        "timezone": timezone,
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "templating": {"list": variables or []},
        "annotations": {"list": []},
        "links": links or [],
        "panels": panels,
    }
