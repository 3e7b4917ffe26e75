"""Alert rules, the e-mail contact point, the notification policy and the message templates.

Every rule is A (an InfluxQL query over a window ending now) → B (reduce) → C (a threshold, or a math condition);
the rule fires when C is not 0. A sensor's limits are two rules, as Grafana's own threshold rules are: the high
limit compares the window's maximum, the low limit its minimum, so an excursion between two readings of a swinging
signal is not averaged away; ``limit_for`` is their pending period (beyond the limit at every evaluation for that
long before a mail). No data means "all clear" only where that is true: a sensor's stale rule and the backup rule
alert on no data, the others do not (the stale rule covers them). Only rules that can concern this station are
rendered: UPS rules for ``nut`` sensors, backup and restore-drill rules when backups are enabled.

Mails carry text only (value, threshold, description, a link): Grafana's image renderer does not run on ARM.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fieldstation.grafana import queries as q
from fieldstation.grafana.dashboards import UIDS
from fieldstation.grafana.panels import DATASOURCE_UID
from fieldstation.grafana.settings import GrafanaSettings, seconds
from fieldstation.loader import ConfigError
from fieldstation.sensor import Sensor

EXPR = {"type": "__expr__", "uid": "__expr__"}
CONTACT_POINT = "fieldstation-email"
TEMPLATE = "fieldstation"


def _uid(kind: str, key: str) -> str:
    """Grafana rule uids are at most 40 characters: a readable kind and a digest of what the rule is about."""
    return f"fs-{kind}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _window(s: int) -> str:
    return f"{s}s"


def rule(  # noqa: PLR0917 -- uid, title, query, window, reducer, condition: the rule itself
    uid: str,
    title: str,
    query: str,
    window_s: int,
    reducer: str,
    condition: str | tuple[str, float],
    *,
    for_: str,
    no_data: str,
    labels: dict[str, str],
    summary: str,
    description: str,
    threshold: str,
    link: str,
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "condition": "C",
        "data": [
            {
                "refId": "A",
                "relativeTimeRange": {"from": window_s, "to": 0},
                "datasourceUid": DATASOURCE_UID,
                "model": {
                    "refId": "A",
                    "query": query,
                    "rawQuery": True,
                    "resultFormat": "time_series",
                    "intervalMs": 1000,
                    "maxDataPoints": 43200,
                },
            },
            *expression_steps(reducer, condition),
        ],
        "noDataState": no_data,
        "execErrState": "Error",
        "for": for_,
        "isPaused": False,
        "labels": labels,
        "annotations": {
            "summary": summary,
            "description": description,
            "threshold": threshold,
            "value": "{{ if $values.B }}{{ humanize $values.B.Value }}{{ else }}no data{{ end }}",
            "link": link,
        },
    }


def expression_steps(reducer: str, condition: str | tuple[str, float]) -> list[dict[str, Any]]:
    """What every rule of ours evaluates after its query A: B reduces A (nulls dropped), C is the condition on B."""
    reduce = {"refId": "B", "type": "reduce", "expression": "A", "reducer": reducer, "settings": {"mode": "dropNN"},
              "datasource": EXPR}
    return [
        {"refId": "B", "datasourceUid": "__expr__", "model": reduce},
        {"refId": "C", "datasourceUid": "__expr__", "model": _condition(condition)},
    ]


def _condition(condition: str | tuple[str, float]) -> dict[str, Any]:
    """A math expression over $B, or (evaluator, value): Grafana's threshold expression (``gt``, ``lt``) on B."""
    if isinstance(condition, str):
        return {"refId": "C", "type": "math", "expression": condition, "datasource": EXPR}
    evaluator, value = condition
    return {
        "refId": "C",
        "type": "threshold",
        "expression": "B",
        "conditions": [{"evaluator": {"type": evaluator, "params": [value]}}],
        "datasource": EXPR,
    }


#: A limit → (its side, InfluxQL function over the window, Grafana reducer, threshold evaluator, word).
LIMIT_SIDES = (("high", "max", "max", "gt", "above"), ("low", "min", "min", "lt", "below"))


def limit_window(sensor: Sensor, gs: GrafanaSettings) -> int:
    """What each evaluation looks at: two evaluations' worth (no reading falls between two windows), and at least two
    of the sensor's readings."""
    return max(2 * seconds(gs.alerts.evaluate_every), int(2 * sensor.interval + 0.999), 120)


def _unit(sensor: Sensor, field: str) -> str:
    u = sensor.unit_of(field)
    return f" {u}" if u else ""


def limit_rules(sensors: list[Sensor], gs: GrafanaSettings) -> list[dict[str, Any]]:
    out = []
    link = f"{gs.url}/d/{UIDS['overview']}"
    for s in sensors:
        window = limit_window(s, gs)
        for field, (lo, hi) in s.limits.items():
            unit = _unit(s, field)
            what = f"{s.description or s.name}" + ("" if field == "value" else f" {field}")
            for side, fn, reducer, evaluator, word in LIMIT_SIDES:
                limit = hi if side == "high" else lo
                query = (
                    f"SELECT {fn}({q.ident(field)}) FROM {q.RAW}.{q.ident(s.measurement_name)} "  # noqa: S608
                    f'WHERE "sensor" = {q.literal(s.name)} AND $timeFilter'
                )
                out.append(
                    rule(
                        _uid(side, f"{s.name}/{field}"),
                        f"{s.name} {field} {word} {limit:g}{unit}",
                        query,
                        window,
                        reducer,
                        (evaluator, limit),
                        for_=gs.alerts.limit_for,
                        no_data="OK",  # the stale rule covers silence
                        labels={"kind": "limit", "sensor": s.name, "field": field, "limit": side},
                        summary=f"{what} reached {{{{ humanize $values.B.Value }}}}{unit}, {word} its {side} limit "
                        f"{limit:g}{unit}",
                        description=s.description or s.name,
                        threshold=f"{lo:g} … {hi:g}{unit}: {word} {limit:g}{unit} at every evaluation for "
                        f"{gs.alerts.limit_for} (the {fn} of each {window} s)",
                        link=link,
                    )
                )
    return out


def stale_window(sensor: Sensor, gs: GrafanaSettings) -> int:
    """No good reading for ``stale_after`` intervals, but never shorter than two evaluations."""
    return max(int(sensor.stale_after * sensor.interval + 0.999), 2 * seconds(gs.alerts.evaluate_every))


def stale_rules(sensors: list[Sensor], gs: GrafanaSettings) -> list[dict[str, Any]]:
    out = []
    link = f"{gs.url}/d/{UIDS['agent']}"
    for s in sensors:
        window = stale_window(s, gs)
        field = s.dashboard_fields()[0]
        query = (
            f"SELECT count({q.ident(field)}) FROM {q.RAW}.{q.ident(s.measurement_name)} "  # noqa: S608
            f'WHERE "sensor" = {q.literal(s.name)} AND $timeFilter'
        )
        out.append(
            rule(
                _uid("stale", s.name),
                f"{s.name} sends no data",
                query,
                window,
                "last",
                "$B < 1",
                for_="0s",
                no_data="Alerting",  # no data is the alert, never "all clear"
                labels={"kind": "stale", "sensor": s.name},
                summary=f"{s.description or s.name}: no reading for {window} s",
                description=f"{s.name}: no reading in the last {window} s (stale after {s.stale_after} × "
                f"{s.interval:g} s). The sensor, its cable or the agent is down.",
                threshold=f"at least one reading per {window} s",
                link=link,
            )
        )
    return out


def ups_rules(nuts: list[Sensor], gs: GrafanaSettings) -> list[dict[str, Any]]:
    out = []
    link = f"{gs.url}/d/{UIDS['ups']}"
    for s in nuts:
        cfg = gs.ups_for(s.name)
        m, n = s.measurement_name, s.name
        ups = s.description or s.name
        specs = [
            (
                "power-cut",
                f"{n}: power cut",
                q.count_where(m, n, '"on_battery" = true'),
                120,
                "last",
                "$B > 0",
                f"Power cut: {ups} runs on battery",
                "on battery (OB)",
            ),
            (
                "power-restored",
                f"{n}: power restored",
                q.count_where(m, n, '"event" =~ /power_restored/', "event"),
                120,
                "last",
                "$B > 0",
                f"Power restored: {ups} is back on wall power",
                "back on line (OL)",
            ),
            (
                "battery-low",
                f"{n}: battery at or below {cfg.low_battery_alert:g} %",
                q.last(m, n, "battery_charge"),
                300,
                "last",
                f"$B <= {cfg.low_battery_alert!r}",
                f"{ups}: battery at {{{{ humanize $values.B.Value }}}} %",
                f"≤ {cfg.low_battery_alert:g} %",
            ),
            (
                "overload",
                f"{n}: load at or above {cfg.overload_alert:g} %",
                q.last(m, n, "ups_load", "max"),
                120,
                "last",
                f"$B >= {cfg.overload_alert!r}",
                f"{ups}: load {{{{ humanize $values.B.Value }}}} %",
                f"≥ {cfg.overload_alert:g} %",
            ),
        ]
        for kind, title, query, window, reducer, cond, summary, threshold in specs:
            out.append(
                rule(
                    _uid(kind, n),
                    title,
                    query,
                    window,
                    reducer,
                    cond,
                    for_="0s",
                    no_data="OK",
                    labels={"kind": "ups", "sensor": n, "event": kind},
                    summary=summary,
                    description=f"{ups} ({n}), through NUT.",
                    threshold=threshold,
                    link=link,
                )
            )
    return out


def remote_shutdown_rule(gs: GrafanaSettings) -> dict[str, Any]:
    """A host the UPS shutdown could not reach over SSH (recorded by fieldstation-ups-shutdown)."""
    query = 'SELECT count("ok") FROM "raw"."fieldstation_shutdown" WHERE "ok" = false AND $timeFilter GROUP BY "host"'
    return rule(
        _uid("remote-shutdown", "remote-shutdown"),
        "A remote shutdown failed",
        query,
        3600,
        "last",
        "$B > 0",
        for_="0s",
        no_data="OK",
        labels={"kind": "ups", "event": "remote-shutdown-failed"},
        summary="Remote shutdown of {{ $labels.host }} failed: it may lose power uncleanly",
        description="The UPS shutdown could not run its command on the host over SSH (key, network, sudo).",
        threshold="every remote host shut down",
        link=f"{gs.url}/d/{UIDS['ups']}",
    )


def backup_rule(gs: GrafanaSettings) -> dict[str, Any]:
    age = seconds(gs.alerts.backup_max_age)
    query = (
        'SELECT count("bytes") FROM "raw"."fieldstation_backup" '
        'WHERE "kind" = \'backup\' AND "ok" = true AND $timeFilter'
    )
    return rule(
        _uid("backup", "backup"),
        f"No good backup for {gs.alerts.backup_max_age}",
        query,
        age,
        "last",
        "$B < 1",
        for_="0s",
        no_data="Alerting",
        labels={"kind": "backup"},
        summary=f"The last good backup is older than {gs.alerts.backup_max_age}",
        description="The backup timer's runs are recorded in fieldstation_backup; none succeeded in the window.",
        threshold=f"a good backup every {gs.alerts.backup_max_age}",
        link=f"{gs.url}/d/{UIDS['agent']}",
    )


#: The restore drill runs weekly: a failed one alerts until it is a week old (the next drill's result by then).
DRILL_WINDOW_S = 7 * 86400


def drill_rule(gs: GrafanaSettings) -> dict[str, Any]:
    """A failed restore drill (``fieldstation backup verify``): the backups may not restore."""
    query = (
        'SELECT count("duration_s") FROM "raw"."fieldstation_backup" '
        'WHERE "kind" = \'restore_drill\' AND "ok" = false AND $timeFilter'
    )
    return rule(
        _uid("restore-drill", "restore-drill"),
        "The restore drill failed",
        query,
        DRILL_WINDOW_S,
        "last",
        "$B > 0",
        for_="0s",
        no_data="OK",
        labels={"kind": "backup", "event": "restore-drill-failed"},
        summary="The weekly restore drill failed: the latest backup may not restore",
        description="fieldstation backup verify restores the latest backup into a scratch database and compares it "
        "with the live one; journalctl -u fieldstation-backup-verify says what differed.",
        threshold="every restore drill passes",
        link=f"{gs.url}/d/{UIDS['agent']}",
    )


def rules_file(sensors: list[Sensor], nuts: list[Sensor], gs: GrafanaSettings) -> dict[str, Any]:
    groups = [
        ("sensor limits", limit_rules(sensors, gs)),
        ("stale sensors", stale_rules(sensors, gs)),
        ("ups", [*ups_rules(nuts, gs), remote_shutdown_rule(gs)] if nuts else []),
        ("backups", [backup_rule(gs), drill_rule(gs)] if gs.backups else []),
    ]
    return {
        "apiVersion": 1,
        "groups": [
            {"orgId": 1, "name": name, "folder": gs.alerts.folder, "interval": gs.alerts.evaluate_every, "rules": rules}
            for name, rules in groups
            if rules
        ],
        "deleteRules": [{"orgId": 1, "uid": uid} for uid in retired_uids(sensors, gs)],
    }


def retired_uids(sensors: list[Sensor], gs: GrafanaSettings) -> list[str]:
    """Rules earlier renders provisioned that this one does not: Grafana keeps a provisioned rule that leaves the
    file, so they are deleted by uid. The one-rule-per-field limit rules (a 1-minute mean against both limits), and
    the backup rules where backups are off (every station had them, alerting for ever without backups)."""
    out = [_uid("limit", f"{s.name}/{field}") for s in sensors for field in s.limits]
    if not gs.backups:
        out += [_uid("backup", "backup"), _uid("restore-drill", "restore-drill")]
    return out


SUBJECT = (
    '{{ define "fieldstation.subject" }}[{{ .Status | toUpper }}{{ if eq .Status "firing" }} {{ len .Alerts.Firing }}'
    "{{ end }}] {{ range $i, $a := .Alerts }}{{ if $i }}; {{ end }}{{ $a.Annotations.summary }}{{ end }}{{ end }}"
)
MESSAGE = """{{ define "fieldstation.message" }}{{ range .Alerts -}}
{{ if eq .Status "firing" }}ALERT{{ else }}RESOLVED{{ end }}: {{ .Annotations.summary }}
  Sensor:    {{ .Annotations.description }}
  Value:     {{ .Annotations.value }}
  Threshold: {{ .Annotations.threshold }}
  Since:     {{ .StartsAt.Format "2006-01-02 15:04:05 MST" }}
  Dashboard: {{ .Annotations.link }}

{{ end }}-- Fieldstation. Mails are grouped; a still-firing alert is repeated at most every few hours.
{{ end }}"""


def templates_file() -> dict[str, Any]:
    return {"apiVersion": 1, "templates": [{"orgId": 1, "name": TEMPLATE, "template": f"{SUBJECT}\n{MESSAGE}\n"}]}


def contact_points_file(gs: GrafanaSettings) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "contactPoints": [
            {
                "orgId": 1,
                "name": CONTACT_POINT,
                "receivers": [
                    {
                        "uid": CONTACT_POINT,
                        "type": "email",
                        "disableResolveMessage": False,
                        "settings": {
                            "addresses": ";".join(gs.alerts.emails),
                            "singleEmail": True,
                            "subject": '{{ template "fieldstation.subject" . }}',
                            "message": '{{ template "fieldstation.message" . }}',
                        },
                    }
                ],
            }
        ],
    }


def mail_groups(sensors: list[Sensor], nuts: list[Sensor], gs: GrafanaSettings) -> int:
    """How many alert groups the policy can make: each sends at most one mail per group_interval."""
    by = set(gs.alerts.group_by)
    if "..." in by or "alertname" in by:  # a group per rule
        return sum(len(g["rules"]) for g in rules_file(sensors, nuts, gs)["groups"])
    n = 1
    if "kind" in by:
        n *= 4
    if "sensor" in by:
        n *= max(len(sensors), 1)
    return n


def policies_file(sensors: list[Sensor], nuts: list[Sensor], gs: GrafanaSettings) -> dict[str, Any]:
    a = gs.alerts
    groups = mail_groups(sensors, nuts, gs)
    per_hour = groups * 3600 / seconds(a.group_interval)
    if per_hour > a.max_mails_per_hour:
        raise ConfigError(
            f"alerts: grouping by {a.group_by} every {a.group_interval} can send {per_hour:g} mails an hour, "
            f"over max_mails_per_hour = {a.max_mails_per_hour}: group by fewer labels or raise group_interval"
        )
    return {
        "apiVersion": 1,
        "policies": [
            {
                "orgId": 1,
                "receiver": CONTACT_POINT,
                "group_by": list(a.group_by),
                "group_wait": a.group_wait,
                "group_interval": a.group_interval,
                "repeat_interval": a.repeat_interval,
            }
        ],
    }
