"""``fieldstation rename-series OLD NEW``: copy a measurement, verify, then drop the old one.

Per retention policy, ``SELECT * INTO NEW FROM OLD GROUP BY *`` (without ``GROUP BY *`` InfluxDB would turn the
tags into fields), one time window at a time so a Pi never holds a year of points in memory. Then, per retention
policy, ``count(*) GROUP BY *`` of OLD and NEW must agree series by series and field by field, and the field types
must be the same; only then ``DROP MEASUREMENT OLD`` (which drops it in every policy).

Refused: NEW already exists (unless ``--merge``); a continuous query that names OLD (the energy sums of
``influx setup``: renaming would silently stop its rollups); the generic rollups (``FROM raw./.*/ INTO
:MEASUREMENT``) need nothing.

Dashboards: :mod:`fieldstation.grafana` renders them from config.py, where a sensor's ``measurement`` names its
series. The lasting change is therefore in config.py (the agent keeps writing OLD until it says NEW), followed
by ``fieldstation grafana render``. So that Grafana shows NEW at once, the rendered files under the provisioning
directory are rewritten too (each ``"OLD"`` after a ``FROM <policy>.`` in a query); re-rendering from the updated
config.py gives the same files.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from fieldstation.grafana.queries import ident
from fieldstation.loader import ConfigError
from fieldstation.tools.common import Target, field_types, format_time, retention_policies, source

WINDOW_NS = 7 * 86400 * 10**9  # a week of points per SELECT INTO


def _measurements(t: Target) -> set[str]:
    return {str(r["name"]) for r in t.influx.rows("SHOW MEASUREMENTS", t.db)}


def _bounds(t: Target, rp: str, measurement: str) -> tuple[int, int] | None:
    """First and last timestamp of the measurement in a policy, or None if it has no points there."""
    out = []
    for order in ("ASC", "DESC"):
        q = f"SELECT * FROM {source(t.db, rp, measurement)} ORDER BY time {order} LIMIT 1"  # noqa: S608
        rows = t.influx.rows(q, t.db, epoch="ns")
        if not rows:
            return None
        out.append(int(rows[0]["time"]))
    return out[0], out[1]


def counts(t: Target, rp: str, measurement: str) -> dict[tuple[tuple[str, str], ...], dict[str, int]]:
    """Series (its tags) → field → number of points, in one retention policy."""
    q = f"SELECT count(*) FROM {source(t.db, rp, measurement)} GROUP BY *"  # noqa: S608  (quoted names)
    res = t.influx.query(q, t.db, epoch="ns")
    out: dict[tuple[tuple[str, str], ...], dict[str, int]] = {}
    for r in res:
        for s in r.get("series", []):
            key = tuple(sorted((k, v) for k, v in s.get("tags", {}).items() if v))
            row = dict(zip(s["columns"], s["values"][0], strict=True))
            out[key] = {k.removeprefix("count_"): int(v) for k, v in row.items() if k != "time" and v}
    return out


def continuous_queries_naming(t: Target, measurement: str) -> list[str]:
    pattern = re.compile(r'\."?' + re.escape(measurement) + r'"?(\s|$)')
    names = []
    for r in t.influx.query("SHOW CONTINUOUS QUERIES"):
        for s in r.get("series", []):
            if s.get("name") != t.db:
                continue
            for name, text in s.get("values", []):
                if pattern.search(text):
                    names.append(str(name))
    return names


def copy(t: Target, old: str, new: str, *, merge: bool = False) -> dict[str, int]:
    """Copy OLD into NEW in every retention policy and verify; returns points copied per policy. Drops nothing."""
    existing = _measurements(t)
    if old not in existing:
        raise ConfigError(f"{old}: no such measurement in database {t.db}")
    if new in existing and not merge:
        raise ConfigError(f"{new}: already exists in database {t.db} (--merge copies into it anyway)")
    cqs = continuous_queries_naming(t, old)
    if cqs:
        raise ConfigError(
            f"{old}: named by continuous quer{'ies' if len(cqs) > 1 else 'y'} {', '.join(cqs)} "
            "(change influx setup first, or its rollups would stop)"
        )
    copied: dict[str, int] = {}
    for rp in retention_policies(t):
        bounds = _bounds(t, rp, old)
        if bounds is None:
            continue
        written = 0
        start = bounds[0]
        while start <= bounds[1]:
            end = min(start + WINDOW_NS, bounds[1] + 1)
            q = (
                f"SELECT * INTO {source(t.db, rp, new)} FROM {source(t.db, rp, old)} "  # noqa: S608 -- quoted names
                f"WHERE time >= {start} AND time < {end} GROUP BY *"
            )
            for r in t.influx.query(q, t.db, epoch="ns"):
                for s in r.get("series", []):
                    written += sum(int(v[1]) for v in s.get("values", []))
            print(f"{rp}: copied {written} points up to {format_time(end - 1)}", file=sys.stderr, flush=True)
            start = end
        copied[rp] = written
        verify(t, rp, old, new, merge=merge)
    return copied


def verify(t: Target, rp: str, old: str, new: str, *, merge: bool = False) -> None:
    """Same series, same counts per field (at least as many with --merge), same field types; else ConfigError."""
    before, after = counts(t, rp, old), counts(t, rp, new)
    for series, fields in before.items():
        got = after.get(series, {})
        for f, n in fields.items():
            m = got.get(f, 0)
            if m != n and not (merge and m > n):
                tags = ",".join(f"{k}={v}" for k, v in series) or "(no tags)"
                raise ConfigError(f"{rp}.{new} {tags}: {m} {f} points, {old} has {n}; {old} kept")
    old_types, new_types = field_types(t, rp, old), field_types(t, rp, new)
    for f, kind in old_types.items():
        if new_types.get(f) != kind:
            raise ConfigError(f"{rp}.{new}.{f}: type {new_types.get(f)}, {old} has {kind}; {old} kept")


def drop(t: Target, old: str, new: str, policies: list[str], *, merge: bool = False) -> None:
    """Verify once more, right before dropping: a point that reached OLD since the copy keeps OLD."""
    for rp in policies:
        verify(t, rp, old, new, merge=merge)
    t.influx.query(f"DROP MEASUREMENT {ident(old)}", t.db)


# -- dashboards -------------------------------------------------------------------------------------------


def _rewrite(node: Any, pattern: re.Pattern[str], replacement: str) -> Any:
    if isinstance(node, dict):
        return {k: _rewrite(v, pattern, replacement) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite(v, pattern, replacement) for v in node]
    if isinstance(node, str):
        return pattern.sub(replacement, node)
    return node


def provisioning_files(provisioning: Path) -> Iterator[Path]:
    """The files ``fieldstation grafana render`` writes that hold queries."""
    yield from sorted((provisioning / "dashboards").glob("fieldstation*/**/*.json"))
    yield from sorted((provisioning / "alerting").glob("fieldstation-rules.yaml"))


def rewrite_dashboards(provisioning: Path, old: str, new: str) -> list[Path]:
    """Point the rendered dashboards and alert rules at NEW; returns the files changed."""
    from fieldstation.grafana import yaml_text

    # A measurement in a query is always quoted and follows its policy: "raw"."OLD" or "$rp"."OLD".
    pattern = re.compile(r"(?<=\.)" + re.escape(ident(old)) + r"(?=[\s,;)]|$)")
    changed = []
    for path in provisioning_files(provisioning):
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            data = json.loads(text)
            out = json.dumps(_rewrite(data, pattern, ident(new)), indent=2, sort_keys=True) + "\n"
        else:
            data = yaml.safe_load(text)
            out = yaml_text(_rewrite(data, pattern, ident(new)))
        if out != text:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(out, encoding="utf-8")
            tmp.replace(path)
            changed.append(path)
    return changed
