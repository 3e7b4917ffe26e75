"""A reading: what a driver returns and what the spool stores.

A reading is one InfluxDB point: a measurement, tags (always ``sensor`` and ``unit``), fields and a UTC
timestamp in nanoseconds. Line protocol encoding lives here so that every writer and test shares one
definition (https://docs.influxdata.com/influxdb/v1/write_protocols/line_protocol_reference/).
"""

from __future__ import annotations

import functools
import math
import reprlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

FieldValue = float | int | bool | str

#: The limits on what one read may return (README, "Writing your own sensor"). A read over a whole-read limit is
#: refused as a whole (checked before any work, so a runaway driver costs nothing); a field breaking a per-field
#: rule is dropped and the others kept. Either way it is counted as an error of the sensor and never spooled.
MAX_FIELDS = 1000  # fields per read, across all its readings
MAX_TEXT_BYTES = 1 << 20  # UTF-8 bytes of string values per read: one line stays far below InfluxDB's 25 MB request
MAX_STRING_BYTES = 64 * 1024  # UTF-8 bytes of one string value (InfluxDB 1.x's own limit on a string field)
MAX_FIELD_NAME = 255  # characters of a field name
#: InfluxDB refuses a field named ``time`` (a partial write: the whole batch is answered 400).
RESERVED_FIELD_NAMES = frozenset({"time"})
INT64 = (-(1 << 63), (1 << 63) - 1)

_short_repr = reprlib.Repr()
_short_repr.maxstring = _short_repr.maxother = _short_repr.maxlong = 40


def short(value: object) -> str:
    """A value for a one-line message: its repr, cut to about 40 characters (a field name may be huge)."""
    try:
        return _short_repr.repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


def _is_text(name: str) -> bool:
    try:
        name.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


#: The rules of a field name, in order: (broken when, what is wrong). Control characters are not text; a backslash
#: is line protocol's escape and would change the key; ``time`` InfluxDB refuses (the whole batch answered 400).
_NAME_RULES: tuple[tuple[Callable[[str], bool], str], ...] = (
    (lambda n: not n, "is empty"),
    (lambda n: n in RESERVED_FIELD_NAMES, "is reserved by InfluxDB"),
    (lambda n: not _is_text(n), "is not valid Unicode text"),
    (lambda n: "\\" in n or not n.isprintable(), "contains a backslash or a control character"),
)


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a field name in line protocol, or None."""
    if not isinstance(name, str):
        return f"field name {short(name)} is {type(name).__name__}, not a string"
    if len(name) > MAX_FIELD_NAME:  # not cached: it may be huge
        return f"field name {short(name)} is longer than {MAX_FIELD_NAME} characters"
    return _str_name_problem(name)


@functools.lru_cache(maxsize=8192)
def _str_name_problem(name: str) -> str | None:
    """Cached: the same field names come back on every read."""
    for broken, what in _NAME_RULES:
        if broken(name):
            return f"field name {short(name)} {what}"
    return None


def text_problem(name: str, value: str) -> tuple[str | None, int]:
    """(why a string value cannot be stored or None, its size in UTF-8 bytes)."""
    if len(value) > MAX_STRING_BYTES:  # at least one byte per character: no need to encode a huge string
        return f"field {name!r} is a string of over {MAX_STRING_BYTES} bytes ({len(value)} characters)", len(value)
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        return f"field {name!r} is not valid Unicode text", len(value)
    if size > MAX_STRING_BYTES:
        return f"field {name!r} is a string of over {MAX_STRING_BYTES} bytes ({size} bytes)", size
    return None, size


_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n"})
_TAG_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "=": r"\=", "\n": r"\n"})


@functools.lru_cache(maxsize=8192)
def _tag(text: str) -> str:
    """A tag key or value, escaped. Cached: the same sensor, unit and field names repeat on every line."""
    return text.translate(_TAG_ESCAPES)


@functools.lru_cache(maxsize=1024)
def _measurement(text: str) -> str:
    return text.translate(_MEASUREMENT_ESCAPES)


def now_ns() -> int:
    """The current UTC time in nanoseconds since the epoch."""
    return time.time_ns()


@dataclass(slots=True)
class Reading:
    measurement: str
    fields: dict[str, FieldValue]
    tags: dict[str, str] = field(default_factory=dict)
    time_ns: int = field(default_factory=now_ns)

    def to_line(self) -> str:
        """Encode as one line of InfluxDB line protocol (nanosecond precision)."""
        return encode_line(self.measurement, self.tags, self.fields, self.time_ns)


def _field(value: FieldValue) -> str:
    if value.__class__ is float and value - value == 0.0:  # the common case first: a finite float
        return repr(value)
    # bool before int: bool is a subclass of int.
    if isinstance(value, bool):
        return "true" if value else "false"
    # By the builtin's own repr: a subclass's repr may be anything (numpy 2's float64 is "np.float64(1.5)").
    if isinstance(value, int):
        return f"{int.__repr__(value)}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"field value {float.__repr__(value)} is not a finite number")
        return float.__repr__(value)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


#: Encoded ``measurement,tags`` by their raw form: readings of one sensor repeat the same few. Bounded, since tags
#: may come from data (a dropped file's columns); beyond the bound a prefix is encoded afresh each time.
_PREFIXES: dict[tuple[object, ...], str] = {}
MAX_PREFIXES = 16384


def _prefix(measurement: str, tags: dict[str, str]) -> str:
    parts = [_measurement(measurement)]
    # Sorted tags are what InfluxDB recommends for write performance, and make output deterministic.
    for key in sorted(tags):
        value = tags[key]
        if value == "":
            continue  # line protocol has no empty tag values
        parts.append(f"{_tag(key)}={_tag(value)}")
    return ",".join(parts)


def encode_line(measurement: str, tags: dict[str, str], fields: dict[str, FieldValue], time_ns: int) -> str:
    if not fields:
        raise ValueError(f"reading for {measurement!r} has no fields")
    key = (measurement, *tags.items())
    prefix = _PREFIXES.get(key)
    if prefix is None:
        prefix = _prefix(measurement, tags)
        if len(_PREFIXES) < MAX_PREFIXES:
            _PREFIXES[key] = prefix
    field_set = ",".join([f"{_tag(k)}={_field(v)}" for k, v in fields.items()])
    return f"{prefix} {field_set} {time_ns}"


#: A spooled line may start with a route: ``@rp=files;db=client_acme <line protocol>``. It sends the point to another
#: retention policy (dropped files hold old data) or another database (a client's own) than the sink's.
ROUTE_MARKER = "@"

Route = tuple[str | None, str | None]  # (retention policy, database); None: the sink's own


def with_policy(line: str, retention_policy: str | None, database: str | None = None) -> str:
    """Prefix a line with its route, if it has one."""
    parts = [f"rp={retention_policy}"] if retention_policy else []
    if database:
        parts.append(f"db={database}")
    return f"{ROUTE_MARKER}{';'.join(parts)} {line}" if parts else line


def routed(lines: Iterable[str]) -> list[tuple[Route, list[str]]]:
    """Consecutive lines grouped by route, the markers removed."""
    groups: list[tuple[Route, list[str]]] = []
    for raw in lines:
        route: Route = (None, None)
        line = raw
        if raw.startswith(ROUTE_MARKER):
            marker, _, line = raw.partition(" ")
            items = dict(kv.split("=", 1) for kv in marker[1:].split(";") if "=" in kv)
            route = (items.get("rp"), items.get("db"))
        if groups and groups[-1][0] == route:
            groups[-1][1].append(line)
        else:
            groups.append((route, [line]))
    return groups
