"""What the tools share: which InfluxDB to talk to, time ranges, tag filters, field types, streamed queries."""

from __future__ import annotations

import base64
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fieldstation.grafana.queries import ident, literal
from fieldstation.influxql import Influx, InfluxError
from fieldstation.loader import ConfigError
from fieldstation.reading import FieldValue
from fieldstation.settings import AgentSettings, load_settings

_DURATION = re.compile(r"^(\d+)(ns|u|µ|ms|s|m|h|d|w)$")
_NS = {"ns": 1, "u": 1_000, "µ": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_NS |= {"d": 86400 * 10**9, "w": 7 * 86400 * 10**9}

#: InfluxDB field type (SHOW FIELD KEYS) → Python type of its values.
FIELD_TYPES: dict[str, type] = {"float": float, "integer": int, "boolean": bool, "string": str}


def duration_ns(text: str) -> int:
    """``24h`` → nanoseconds; the units InfluxQL accepts."""
    m = _DURATION.match(text.strip())
    if not m:
        raise ConfigError(f"{text!r}: expected a duration such as 90s, 15m, 24h or 7d")
    return int(m.group(1)) * _NS[m.group(2)]


def parse_time(text: str) -> int:
    """RFC 3339 (``2026-11-29T12:00:00Z``, a date, or no zone: UTC) or integer nanoseconds → ns since the epoch."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    frac_ns = 0
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)\.(\d{1,9})(.*)$", text)
    if m:  # datetime keeps microseconds only: carry the fraction separately
        text, frac_ns = m.group(1) + m.group(3), int(m.group(2).ljust(9, "0"))
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{text!r}: expected a time such as 2026-11-29T12:00:00Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp()) * 10**9 + frac_ns


def format_time(ns: int) -> str:
    """ns since the epoch → RFC 3339 UTC with all nine digits (exact: a float would lose nanoseconds)."""
    seconds, frac = divmod(ns, 10**9)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


@dataclass(frozen=True, slots=True)
class TimeRange:
    start_ns: int
    end_ns: int

    def where(self) -> str:
        return f"time >= {self.start_ns} AND time <= {self.end_ns}"


def time_range(start: str | None, end: str | None, last: str | None, default_last: str | None = "24h") -> TimeRange:
    """``--start/--end`` or ``--last``; the end defaults to now."""
    now = time.time_ns()
    end_ns = parse_time(end) if end else now
    if start and last:
        raise ConfigError("give --start or --last, not both")
    if start:
        start_ns = parse_time(start)
    elif last or default_last:
        start_ns = end_ns - duration_ns(last or default_last or "")
    else:
        raise ConfigError("give --start or --last")
    if start_ns > end_ns:
        raise ConfigError(f"--start {format_time(start_ns)} is after --end {format_time(end_ns)}")
    return TimeRange(start_ns, end_ns)


def tag_filter(pairs: list[str]) -> dict[str, str]:
    """``--where key=value`` (repeatable) → tags."""
    out: dict[str, str] = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--where {item!r}: expected tag=value")
        out[key] = value
    return out


def tag_where(tags: dict[str, str]) -> str:
    """Tags as InfluxQL conditions; an empty value matches series without that tag."""
    return "".join(f" AND {ident(k)} = {literal(v)}" for k, v in sorted(tags.items()))


def source(db: str, rp: str | None, measurement: str) -> str:
    return f"{ident(db)}.{ident(rp) if rp else ''}.{ident(measurement)}"


@dataclass(frozen=True, slots=True)
class Target:
    """An InfluxDB server and database, with credentials."""

    influx: Influx
    db: str


PASSWORD_ENV = "FIELDSTATION_INFLUX_PASSWORD"  # noqa: S105  (a variable's name, not a secret)


def target(
    settings_path: Path | None,
    url: str | None,
    db: str | None,
    sink: str | None = None,
    *,
    user: str | None = None,
    setup_path: Path | None = None,
) -> Target:
    """Which InfluxDB, database and credentials the tools use.

    Server and database: ``--url/--db``, else influx-setup.toml's when it is readable (root on the station), else the
    agent's sink (the first, or ``--sink NAME``). Credentials: ``--user`` with the password from
    ``$FIELDSTATION_INFLUX_PASSWORD``; else influx-setup.toml's admin (the agent's own user may only write, and
    renaming or deleting needs more); else the sink's.
    """
    from fieldstation.influx_setup import load_setup
    from fieldstation.paths import DEFAULT_SETUP

    settings: AgentSettings = load_settings(settings_path)
    chosen = settings.sinks[0]
    if sink is not None:
        named = [s for s in settings.sinks if s.name == sink]
        if not named:
            raise ConfigError(f"--sink {sink}: no such sink in the agent settings")
        chosen = named[0]
    base_url, base_db = chosen.url, chosen.database
    auth = (chosen.username, chosen.password.get_secret_value()) if chosen.username and chosen.password else None
    setup_file = setup_path or DEFAULT_SETUP
    if sink is None and (setup_path is not None or os.access(setup_file, os.R_OK)):
        setup = load_setup(setup_file)
        base_url, base_db = setup.url, setup.database
        auth = (setup.admin.username, setup.admin.password.get_secret_value())
    if user is not None:
        password = os.environ.get(PASSWORD_ENV)
        if not password:
            raise ConfigError(f"--user {user}: set ${PASSWORD_ENV} to its password")
        auth = (user, password)
    return Target(Influx(url or base_url, auth), db or base_db)


def retention_policies(t: Target) -> list[str]:
    rows = t.influx.rows("SHOW RETENTION POLICIES", t.db)
    return [str(r["name"]) for r in rows]


def field_types(t: Target, rp: str | None, measurement: str) -> dict[str, str]:
    """Field → InfluxDB type (float, integer, boolean, string) in one retention policy; {} if it has none."""
    rows = t.influx.rows(f"SHOW FIELD KEYS FROM {source(t.db, rp, measurement)}", t.db)
    return {str(r["fieldKey"]): str(r["fieldType"]) for r in rows}


def tag_keys(t: Target, measurement: str) -> list[str]:
    rows = t.influx.rows(f"SHOW TAG KEYS FROM {ident(measurement)}", t.db)
    return sorted(str(r["tagKey"]) for r in rows)


def typed(value: Any, influx_type: str) -> FieldValue:
    """A JSON value back to its field type: InfluxDB's JSON writes the float 21.0 as ``21``."""
    if influx_type == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value  # type: ignore[no-any-return]


def stream(t: Target, q: str, chunk_size: int = 10_000) -> Iterator[dict[str, Any]]:
    """The series chunks of a query, streamed (``chunked=true``): memory holds one chunk, not the result.

    Each item is one series piece: ``{"name", "tags", "columns", "values"}``; a series larger than a chunk comes
    in several pieces, in order. Times are ns.
    """
    params = {"q": q, "db": t.db, "epoch": "ns", "chunked": "true", "chunk_size": str(chunk_size)}
    req = urllib.request.Request(  # noqa: S310  (configured URL)
        f"{t.influx.url}/query", data=urllib.parse.urlencode(params).encode(), method="POST"
    )
    if t.influx.auth is not None:
        token = base64.b64encode(f"{t.influx.auth[0]}:{t.influx.auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310  (configured URL)
            for raw in r:
                if not raw.strip():
                    continue
                body = json.loads(raw)
                if "error" in body:
                    raise InfluxError(f"{t.influx.url}: {body['error']}")
                for res in body.get("results", []):
                    if "error" in res:
                        raise InfluxError(f"{t.influx.url}: {res['error']} (in: {q[:120]})")
                    yield from res.get("series", [])
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace").strip()
        exc.close()
        raise InfluxError(f"{t.influx.url}: {exc.code} {text}") from None
    except (OSError, ValueError) as exc:
        raise InfluxError(f"{t.influx.url}: {type(exc).__name__}: {exc}") from None
