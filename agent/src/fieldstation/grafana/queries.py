"""Every InfluxQL statement the dashboards and alert rules run, in one place.

Grafana substitutes ``$timeFilter`` (the panel's time range), ``$__interval`` (its bucket), ``${__range_s}`` (the
range in seconds) and ``$rp`` (the hidden variable that picks the retention policy for the span shown, see
:data:`fieldstation.influx_setup.RP_VARIABLE_QUERY`). Series over a dashboard's range read ``"$rp"`` and select
``/^(mean_)?<field>$/``, which is ``<field>`` in raw points and ``mean_<field>`` in the rollups. Last values, fixed
windows ("the last 24 hours") and events read the raw policy, which keeps 35 days by default.

Names (measurements, fields, sensors) come from config.py, where they are validated identifiers; string values
are quoted with :func:`literal` anyway.
"""

from __future__ import annotations

import re

from fieldstation.influx_setup import RAW_POLICY

RAW = f'"{RAW_POLICY}"'
RP = '"$rp"'


def ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def either(field: str) -> str:
    """The field in raw points or its mean in a rollup."""
    return f"/^(mean_)?{re.escape(field)}$/"


def _where(sensor: str, *extra: str) -> str:
    return " AND ".join([f'"sensor" = {literal(sensor)}', *extra, "$timeFilter"])


def series(measurement: str, sensor: str, field: str) -> str:
    """Mean per bucket over the dashboard's range, from the policy chosen for it."""
    return (
        f"SELECT mean({either(field)}) FROM {RP}.{ident(measurement)} "  # noqa: S608 -- identifiers quoted
        f"WHERE {_where(sensor)} GROUP BY time($__interval) fill(none)"
    )


def last(measurement: str, sensor: str, field: str, fn: str = "last") -> str:
    """The last value in the range (or ``fn``: max, min, mean), from raw points."""
    return f"SELECT {fn}({ident(field)}) FROM {RAW}.{ident(measurement)} WHERE {_where(sensor)}"  # noqa: S608


def mean_since(measurement: str, sensor: str, field: str, window: str, scale: float = 1.0) -> str:
    """Mean over a fixed window ending now, whatever the dashboard shows."""
    factor = f" * {scale:g}" if scale != 1 else ""
    return (
        f"SELECT mean({ident(field)}){factor} FROM {RAW}.{ident(measurement)} "  # noqa: S608
        f'WHERE "sensor" = {literal(sensor)} AND time > now() - {window}'
    )


def series_scaled(measurement: str, sensor: str, field: str, scale: float) -> list[str]:
    """``series`` × a constant. InfluxQL allows no arithmetic on a regex field, so two queries: one finds the field
    in raw points, the other its mean in a rollup; for any ``$rp`` exactly one of them has data."""
    return [
        f"SELECT mean({ident(name)}) * {scale:g} FROM {RP}.{ident(measurement)} "  # noqa: S608
        f"WHERE {_where(sensor)} GROUP BY time($__interval) fill(none)"
        for name in (field, f"mean_{field}")
    ]


def sum_series(measurement: str, sensor: str, field: str) -> str:
    """Sum per bucket of a per-read amount (bytes written since the last read), from raw points."""
    return (
        f"SELECT sum({ident(field)}) FROM {RAW}.{ident(measurement)} "  # noqa: S608
        f"WHERE {_where(sensor)} GROUP BY time($__interval) fill(0)"
    )


# -- UPS ------------------------------------------------------------------------------------------------


def uptime_percent(measurement: str, sensor: str, interval: float, *, on_line: bool = False) -> str:
    """Share of the range with a reading (the station was up), or with the UPS on wall power: readings come every
    ``interval`` seconds, so count × interval / range."""
    extra = ['"on_line" = true'] if on_line else []
    return (
        f'SELECT count("status") * {interval * 100:g} / ${{__range_s}} '  # noqa: S608
        f"FROM {RAW}.{ident(measurement)} WHERE {_where(sensor, *extra)}"
    )


def outage_events(measurement: str, sensor: str) -> str:
    return f'SELECT "event" FROM {RAW}.{ident(measurement)} WHERE {_where(sensor)}'  # noqa: S608


def outage_lengths(measurement: str, sensor: str) -> str:
    return f'SELECT "outage_s" FROM {RAW}.{ident(measurement)} WHERE {_where(sensor)}'  # noqa: S608


def runtime_left(measurement: str, sensor: str, fresh_s: float) -> str:
    """NUT's runtime estimate while the UPS is on battery: the driver writes ``runtime_left`` only then, so a reading
    older than ``fresh_s`` (a few intervals) means the UPS is back on wall power, and the panel shows nothing."""
    return (
        f'SELECT last("runtime_left") FROM {RAW}.{ident(measurement)} '  # noqa: S608
        f"WHERE {_where(sensor)} AND time > now() - {fresh_s:g}s"
    )


def runtime_to_shutdown(measurement: str, sensor: str, shutdown_charge: float, fresh_s: float) -> str:
    """The runtime left scaled to the charge left above the shutdown threshold (linear discharge), on battery only."""
    return (
        f'SELECT last("runtime_left") * (last("battery_charge") - {shutdown_charge:g}) / last("battery_charge") '  # noqa: S608
        f"FROM {RAW}.{ident(measurement)} WHERE {_where(sensor)} AND time > now() - {fresh_s:g}s"
    )


def count_where(measurement: str, sensor: str, condition: str, field: str = "status", scale: float = 1.0) -> str:
    """Readings matching ``condition`` in the range; × ``scale`` (the interval) gives seconds."""
    factor = f" * {scale:g}" if scale != 1 else ""
    return (
        f"SELECT count({ident(field)}){factor} FROM {RAW}.{ident(measurement)} "  # noqa: S608
        f"WHERE {_where(sensor, condition)}"
    )


# -- energy ---------------------------------------------------------------------------------------------


def _counter(counter: str) -> str:
    return f'"counter" = {literal(counter)}'


def energy_per(
    sensor: str, counter: str, bucket: str, timezone: str, *, field: str = "kwh", by_tariff: bool = False
) -> str:
    """Energy (or cost) per day/week from the ``energy`` measurement, in the tariff's time zone."""
    group = f'time({bucket}), "tariff"' if by_tariff else f"time({bucket})"
    return (
        f'SELECT sum({ident(field)}) FROM {RP}."energy" '  # noqa: S608
        f"WHERE {_where(sensor, _counter(counter))} GROUP BY {group} fill(0) tz({literal(timezone)})"
    )


def energy_total(sensor: str, counter: str, *, field: str = "kwh") -> str:
    """Energy (or cost) over the panel's range: the stats "today", "this week", "this month"."""
    return (
        f'SELECT sum({ident(field)}) FROM {RAW}."energy" '  # noqa: S608
        f"WHERE {_where(sensor, _counter(counter))}"
    )


# -- the agent itself -----------------------------------------------------------------------------------


def spool(field: str) -> str:
    return (
        f'SELECT max({either(field)}) FROM {RP}."fieldstation_spool" '  # noqa: S608
        f'WHERE "sink" != \'\' AND $timeFilter GROUP BY time($__interval), "sink" fill(none)'
    )


def errors_per_sensor() -> str:
    """Failed reads per bucket, per sensor (the counter restarts with the agent, hence non_negative)."""
    return (
        'SELECT non_negative_difference(max("errors")) FROM "raw"."fieldstation_sensor" '
        'WHERE "unit" = \'count\' AND $timeFilter GROUP BY time($__interval), "sensor" fill(none)'
    )


def stale_sensors() -> str:
    return (
        'SELECT last("stale") AS "stale", last("errors") AS "errors" FROM "raw"."fieldstation_sensor" '
        'WHERE "unit" = \'count\' AND time > now() - 1m GROUP BY "sensor"'
    )


def last_backup(kind: str) -> str:
    return (
        'SELECT last("bytes") FROM "raw"."fieldstation_backup" '  # noqa: S608
        f'WHERE "kind" = {literal(kind)} AND "ok" = true AND time > now() - 35d'
    )
