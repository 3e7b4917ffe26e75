"""``fieldstation spikes``: find outliers in one field of a measurement, list them, delete them only when asked.

Methods (a table, :data:`METHODS`): ``mad`` (default) flags a point whose distance from the median of the ``window``
points around it exceeds ``k`` × the scaled median absolute deviation (1.4826 × MAD, σ for normal noise) and
``--min-deviation``; ``absolute`` flags values below ``--min`` or above ``--max``.

Deleting: InfluxDB 1.x deletes whole points (every field of a series at a time, in every retention policy), never
one field. So ``--delete`` first reads everything stored at each spike's time for that series, in every retention
policy, deletes, and writes back all but the spike's field: a Pi reading that also carries ``load1`` keeps it, and a
rollup point that happens to share the timestamp survives.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fieldstation.grafana.queries import ident
from fieldstation.loader import ConfigError
from fieldstation.reading import FieldValue, encode_line
from fieldstation.tools.common import (
    Target,
    TimeRange,
    field_types,
    format_time,
    retention_policies,
    source,
    tag_keys,
    tag_where,
    typed,
)

MAD_SCALE = 1.4826  # MAD × this estimates σ for normally distributed noise


@dataclass(frozen=True, slots=True)
class Spike:
    tags: dict[str, str]
    time_ns: int
    value: float
    reference: float  # the window's median, or the limit crossed
    deviation: float


@dataclass(frozen=True, slots=True)
class Options:
    window: int = 11
    k: float = 5.0
    min_deviation: float = 0.0
    low: float | None = None
    high: float | None = None


def mad_spikes(times: Sequence[int], values: Sequence[float], o: Options) -> list[tuple[int, float, float, float]]:
    """(time, value, median, deviation) of each outlier; the window is centred, shifted inward at the ends."""
    n, w = len(values), o.window
    out = []
    for i, v in enumerate(values):
        lo = max(0, min(i - w // 2, n - w))
        win = values[lo : lo + w]
        med = statistics.median(win)
        mad = statistics.median(abs(x - med) for x in win)
        dev = abs(v - med)
        if dev > 0 and dev > max(o.k * MAD_SCALE * mad, o.min_deviation):
            out.append((times[i], v, med, dev))
    return out


def absolute_spikes(times: Sequence[int], values: Sequence[float], o: Options) -> list[tuple[int, float, float, float]]:
    if o.low is None and o.high is None:
        raise ConfigError("spikes --method absolute: give --min and/or --max")
    out = []
    for t, v in zip(times, values, strict=True):
        if o.low is not None and v < o.low:
            out.append((t, v, o.low, o.low - v))
        elif o.high is not None and v > o.high:
            out.append((t, v, o.high, v - o.high))
    return out


METHODS: dict[str, Callable[[Sequence[int], Sequence[float], Options], list[tuple[int, float, float, float]]]] = {
    "mad": mad_spikes,
    "absolute": absolute_spikes,
}


def find(
    t: Target,
    measurement: str,
    field: str,
    *,
    rp: str | None,
    tags: dict[str, str],
    span: TimeRange,
    method: str,
    o: Options,
) -> list[Spike]:
    types = field_types(t, rp, measurement)
    if not types:
        raise ConfigError(f"{measurement}: no such measurement in database {t.db}{f' (policy {rp})' if rp else ''}")
    if field not in types:
        known = ", ".join(sorted(types)) or "none"
        raise ConfigError(f"{measurement}: no field {field!r} (fields: {known})")
    if types[field] not in ("float", "integer"):
        raise ConfigError(f"{measurement}.{field} is {types[field]}: spikes needs a number field")
    q = (
        f"SELECT {ident(field)} FROM {source(t.db, rp, measurement)} "  # noqa: S608 -- identifiers quoted
        f"WHERE {span.where()}{tag_where(tags)} GROUP BY *"
    )
    spikes: list[Spike] = []
    for res in t.influx.query(q, t.db, epoch="ns"):
        for series in res.get("series", []):
            rows = [(int(r[0]), float(r[1])) for r in series.get("values", []) if r[1] is not None]
            times = [r[0] for r in rows]
            values = [r[1] for r in rows]
            found = METHODS[method](times, values, o)
            series_tags = {k: v for k, v in series.get("tags", {}).items()}
            spikes.extend(Spike(series_tags, tm, v, ref, dev) for tm, v, ref, dev in found)
    return sorted(spikes, key=lambda s: (s.time_ns, sorted(s.tags.items())))


def print_table(spikes: list[Spike], measurement: str, field: str, reference: str) -> None:
    print(f"{'time (UTC)':<31} {'series':<36} {field:>12} {reference:>12} {'deviation':>10}")
    for s in spikes:
        series = ",".join(f"{k}={v}" for k, v in sorted(s.tags.items()) if v) or measurement
        print(f"{format_time(s.time_ns):<31} {series:<36} {s.value:>12.6g} {s.reference:>12.6g} {s.deviation:>10.4g}")


def delete(t: Target, measurement: str, field: str, spikes: list[Spike], rp: str | None) -> int:
    """Delete each spike's point; write back every other field stored at that time (all retention policies)."""
    keys = tag_keys(t, measurement)
    policies = retention_policies(t)
    types = {p: field_types(t, p, measurement) for p in policies}
    target_rp = rp or _default_policy(t)
    for n, s in enumerate(spikes, 1):
        # Every tag key of the measurement is pinned: a series without a key matches only key = ''.
        tags = {k: s.tags.get(k, "") for k in keys}
        when = f"time >= {s.time_ns} AND time <= {s.time_ns}"
        keep: list[tuple[str, str]] = []
        for p in policies:
            q = f"SELECT * FROM {source(t.db, p, measurement)} WHERE {when}{tag_where(tags)}"  # noqa: S608
            for res in t.influx.query(q, t.db, epoch="ns"):
                for series in res.get("series", []):
                    for row in series.get("values", []):
                        point = dict(zip(series["columns"], row, strict=True))
                        fields: dict[str, FieldValue] = {
                            k: typed(v, types[p][k])
                            for k, v in point.items()
                            if k in types[p] and v is not None and not (p == target_rp and k == field)
                        }
                        if fields:
                            keep.append((p, encode_line(measurement, tags, fields, s.time_ns)))
        t.influx.query(f"DELETE FROM {ident(measurement)} WHERE {when}{tag_where(tags)}", t.db)  # noqa: S608
        for p, line in keep:
            t.influx.write([line], t.db, rp=p)
        if n % 100 == 0:
            print(f"deleted {n} of {len(spikes)}", file=sys.stderr, flush=True)
    return len(spikes)


def _default_policy(t: Target) -> str:
    rows = t.influx.rows("SHOW RETENTION POLICIES", t.db)
    return next(str(r["name"]) for r in rows if r.get("default"))
