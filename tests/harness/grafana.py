"""Doing what Grafana does with our provisioning, without Grafana (it cannot be installed on a build machine).

- :func:`substitute`: InfluxQL macros and variables, as Grafana's InfluxDB data source expands them
  (``$timeFilter`` → ``time >= <from>ms and time <= <to>ms``, ``$__interval``, ``${__range_s}``, ``${__range_ms}``,
  ``$rp``), and ``now()`` pinned to the instant of evaluation, so a check can be computed independently.
- :func:`evaluate_rule`: one alert rule as Grafana's alerting evaluates it: query A over its relative time range,
  reduce B (dropping nulls), math or threshold C; no series at all is NoData, and the rule then takes its
  ``noDataState``.
- :func:`rule_states`: the rule evaluated every ``interval`` with its pending period (``for``), as Grafana's
  state manager does: true → Pending, true for ``for`` → Alerting, false → Normal (a firing alert resolves).
- :func:`all_queries`: every InfluxQL statement in rendered dashboards and rules.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

from fieldstation.influxql import Influx

GRAFANA_INTERVALS = ["1s", "5s", "10s", "20s", "30s", "1m", "5m", "10m", "15m", "30m", "1h", "3h", "6h", "12h", "1d"]


def auto_interval(range_ms: int, max_points: int = 1000) -> str:
    """Grafana's $__interval: the range over the panel's width in points, rounded up to a nice step."""
    wanted = range_ms / 1000 / max_points
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    for step in GRAFANA_INTERVALS:
        if int(step[:-1]) * units[step[-1]] >= wanted:
            return step
    return "1d"


def substitute(query: str, *, from_ms: int, to_ms: int, rp: str = "raw", interval: str | None = None) -> str:
    range_ms = to_ms - from_ms
    out = query.replace("$timeFilter", f"time >= {from_ms}ms and time <= {to_ms}ms")
    out = out.replace("$__interval", interval or auto_interval(range_ms))
    out = out.replace("${__range_s}", str(range_ms // 1000)).replace("${__range_ms}", str(range_ms))
    out = out.replace('"$rp"', f'"{rp}"')
    out = out.replace("now()", f"{to_ms}ms")
    assert not re.search(r"\$(?!tag_)[A-Za-z_{]", out), f"unsubstituted macro in {out}"
    return out


def reduce(points: list[Any], reducer: str) -> float | None:
    pts = [float(p) for p in points if p is not None and not (isinstance(p, float) and math.isnan(p))]
    if not pts:
        return None
    if reducer == "last":
        return pts[-1]
    if reducer == "mean":
        return sum(pts) / len(pts)
    if reducer == "max":
        return max(pts)
    if reducer == "min":
        return min(pts)
    if reducer == "count":
        return float(len(pts))
    raise ValueError(reducer)


def math_expression(expression: str, b: float) -> float:
    """Grafana's math expression for the forms we generate: comparisons joined by || and &&."""
    py = expression.replace("$B", repr(b)).replace("||", " or ").replace("&&", " and ")
    assert re.fullmatch(r"[\d.eE+\- <>=!()orand]+", py), py
    return float(eval(py))


THRESHOLDS = {
    "gt": lambda b, p: b > p[0],
    "lt": lambda b, p: b < p[0],
    "within_range": lambda b, p: p[0] < b < p[1],
    "outside_range": lambda b, p: b < p[0] or b > p[1],
}


def condition(model: dict[str, Any], b: float) -> bool:
    """Grafana's C: a math expression over $B, or a threshold expression on B."""
    if model["type"] == "math":
        return bool(math_expression(model["expression"], b))
    assert model["type"] == "threshold" and model["expression"] == "B", model
    (cond,) = model["conditions"]
    return bool(THRESHOLDS[cond["evaluator"]["type"]](b, cond["evaluator"]["params"]))


def _seconds(d: str) -> int:
    return int(d[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[d[-1]]


def rule_states(
    db: Influx, database: str, rule: dict[str, Any], start_ms: int, end_ms: int, *, interval_s: int = 60
) -> list[tuple[int, str]]:
    """(instant, state) at each evaluation from ``start_ms`` to ``end_ms``: Normal, Pending or Alerting."""
    pending = _seconds(rule["for"]) * 1000
    since: int | None = None
    out = []
    for at in range(start_ms, end_ms + 1, interval_s * 1000):
        if evaluate_rule(db, database, rule, at) == "Alerting":
            since = at if since is None else since
            out.append((at, "Alerting" if at - since >= pending else "Pending"))
        else:
            since = None
            out.append((at, "Normal"))
    return out


def evaluate_rule(db: Influx, database: str, rule: dict[str, Any], at_ms: int) -> str:
    """``Alerting``, ``Normal`` (C is 0), or the rule's noDataState when A returns no series."""
    a, b, c = rule["data"]
    window = a["relativeTimeRange"]["from"] * 1000
    query = substitute(a["model"]["query"], from_ms=at_ms - window, to_ms=at_ms)
    series = [row for row in db.rows(query, database, epoch="ms")]
    points = [v for row in series for k, v in row.items() if k != "time" and not isinstance(v, str)]
    reduced = reduce(points, b["model"]["reducer"])
    if not series or reduced is None:
        state: str = rule["noDataState"]
        return "Alerting" if state == "Alerting" else "NoData" if state == "NoData" else "Normal"
    return "Alerting" if condition(c["model"], reduced) else "Normal"


def load_rendered(outdir: Path) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """(dashboards by uid, alert rules) of a rendered provisioning tree."""
    boards = {
        p.stem: json.loads(p.read_text()) for p in sorted((outdir / "dashboards" / "fieldstation").glob("*.json"))
    }
    rules_doc = yaml.safe_load((outdir / "alerting" / "fieldstation-rules.yaml").read_text())
    rules = [r for g in rules_doc["groups"] for r in g["rules"]]
    return boards, rules


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def all_queries(outdir: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(where, query, the panel or rule) for every InfluxQL statement rendered."""
    boards, rules = load_rendered(outdir)
    out = []
    for uid, board in boards.items():
        for v in board["templating"]["list"]:
            out.append((f"{uid} variable {v['name']}", v["query"], v))
        for p in panels(board):
            for t in p["targets"]:
                out.append((f"{uid} panel {p['id']} {p['title']!r} {t['refId']}", t["query"], p))
    for r in rules:
        out.append((f"rule {r['title']!r}", r["data"][0]["model"]["query"], r))
    return out
