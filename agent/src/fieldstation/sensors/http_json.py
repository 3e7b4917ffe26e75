"""Values picked out of a JSON document fetched over HTTP: weather stations, PLC gateways, smart plugs, REST APIs.

Each field is a path into the document: keys joined by dots, list indices in brackets, and keys that hold dots
or brackets quoted in brackets::

    data.sensors[0].temp       doc["data"]["sensors"][0]["temp"]
    [1].value                  doc[1]["value"] (the document is a list)
    readings[-1]               the last element
    meta["fw.version"]         a key with a dot in it
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, ClassVar

from pydantic import Field, field_validator

from fieldstation.reading import FieldValue
from fieldstation.sensor import Sensor, SensorError

#: Larger answers are refused: this driver reads a handful of values, not bulk data.
MAX_BODY = 1 << 20

Step = str | int

_TOKEN = re.compile(
    r"""
    \.?(?P<key>[^.\[\]"']+)                 # key, after a dot unless first
    | \[(?P<index>-?\d+)\]                  # [3], [-1]
    | \[(?P<q>["'])(?P<quoted>.*?)(?P=q)\]  # ["key.with.dots"]
    """,
    re.VERBOSE,
)


class PathError(ValueError):
    """A path that is malformed, or does not lead to a value in a document."""


def parse_path(path: str) -> list[Step]:
    """``"data.sensors[0].temp"`` → ``["data", "sensors", 0, "temp"]``; ``PathError`` if malformed."""
    steps: list[Step] = []
    pos = 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if m is None or (pos == 0 and path.startswith(".")):
            raise PathError(f"path {path!r}: cannot parse {path[pos:]!r} (at character {pos + 1})")
        if m.group("key") is not None:
            if pos > 0 and path[pos] != ".":
                raise PathError(f"path {path!r}: a dot or bracket must come before {m.group('key')!r}")
            steps.append(m.group("key"))
        elif m.group("index") is not None:
            steps.append(int(m.group("index")))
        else:
            steps.append(m.group("quoted"))
        pos = m.end()
    if not steps:
        raise PathError("path is empty")
    return steps


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return "null" if value is None else f"the {type(value).__name__} {value!r}"


_PLAIN_KEY = re.compile(r"[^.\[\]\"']+")


def _show(steps: list[Step]) -> str:
    """Steps back as a path, for messages."""
    out = ""
    for s in steps:
        if isinstance(s, int):
            out += f"[{s}]"
        elif _PLAIN_KEY.fullmatch(s):
            out += f".{s}" if out else s
        else:
            out += f"[{json.dumps(s)}]"
    return out or "the document"


def pick(doc: Any, path: str | list[Step]) -> Any:
    """The value at ``path`` in a decoded JSON document; ``PathError`` naming the step that failed."""
    steps = parse_path(path) if isinstance(path, str) else path
    here: Any = doc
    for i, step in enumerate(steps):
        where = _show(steps[:i])
        if isinstance(step, int):
            if not isinstance(here, list):
                raise PathError(f"{_show(steps)}: {where} is {_kind(here)}, not a list")
            if not -len(here) <= step < len(here):
                raise PathError(f"{_show(steps)}: index {step} out of range, {where} is {_kind(here)}")
            here = here[step]
        else:
            if not isinstance(here, dict):
                raise PathError(f"{_show(steps)}: {where} is {_kind(here)}, not an object")
            if step not in here:
                keys = ", ".join(sorted(here)[:10]) + (", …" if len(here) > 10 else "")
                raise PathError(f"{_show(steps)}: no key {step!r} in {where} (keys: {keys or 'none'})")
            here = here[step]
    return here


def decode(doc: Any, fields: dict[str, str]) -> dict[str, FieldValue]:
    """Pick every field out of a document: numbers, bools and strings; ``PathError`` for anything else."""
    out: dict[str, FieldValue] = {}
    for name, path in fields.items():
        value = pick(doc, path)
        if isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            raise PathError(f"field {name!r}: {path} is {_kind(value)}, not a number, bool or string")
    return out


def display_url(url: str) -> str:
    """The URL for messages: without user and password, and with the query (often an API key) elided."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    query = "?…" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}"


def _without_userinfo(url: str) -> tuple[str, dict[str, str]]:
    """``http://user:pw@host/…`` → (``http://host/…``, a Basic Authorization header): urllib ignores userinfo."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, {}
    netloc = parts.netloc.rpartition("@")[2]
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), {"Authorization": f"Basic {token}"}


class HttpJson(Sensor):
    """Fields picked out of the JSON answer of one HTTP GET."""

    driver: ClassVar[str] = "http_json"

    url: str = Field(description="http:// or https:// URL answering a GET with JSON; user:password@ for Basic auth.")
    fields: dict[str, str] = Field(min_length=1, description="Field name → path into the JSON document.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers (e.g. Authorization).")

    @field_validator("url")
    @classmethod
    def _http_only(cls, v: str) -> str:
        parts = urllib.parse.urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http:// or https:// with a host, got {v!r}")
        return v

    @field_validator("fields")
    @classmethod
    def _paths_parse(cls, v: dict[str, str]) -> dict[str, str]:
        for path in v.values():
            parse_path(path)  # a PathError is a ValueError: reported at config load, with the path
        return v

    def dashboard_fields(self) -> list[str]:
        return list(self.fields)

    def _io_timeout(self) -> float:
        # Below the scheduler's read timeout, so a silent server is reported as such, not as a hung read.
        return min(0.8 * self.read_timeout, 10.0)

    def fetch(self) -> Any:
        """GET the URL and decode its JSON; ``SensorError`` naming the URL and what went wrong."""
        where = f"GET {display_url(self.url)}"
        timeout = self._io_timeout()
        url, auth = _without_userinfo(self.url)
        headers = {"Accept": "application/json", **auth, **self.headers}
        # The scheme is checked at validation: http or https only, never file:// and the like.
        request = urllib.request.Request(url, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
                body = resp.read(MAX_BODY + 1)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise SensorError(f"{where}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise SensorError(f"{where}: no answer within {timeout:g} s") from None
            raise SensorError(f"{where}: cannot connect: {reason}") from None
        except TimeoutError:
            raise SensorError(f"{where}: no answer within {timeout:g} s") from None
        except OSError as exc:
            raise SensorError(f"{where}: {exc}") from None
        if len(body) > MAX_BODY:
            raise SensorError(f"{where}: answer larger than {MAX_BODY} bytes")
        try:
            return json.loads(body)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            start = body[:40].decode("utf-8", "replace")
            raise SensorError(f"{where}: invalid JSON ({exc}), answer starts {start!r}") from None

    def read(self) -> dict[str, FieldValue]:
        # urllib opens a new connection per request; a few per minute cost nothing and survive server restarts.
        doc = self.fetch()
        try:
            return decode(doc, self.fields)
        except PathError as exc:
            raise SensorError(f"GET {display_url(self.url)}: {exc}") from None
