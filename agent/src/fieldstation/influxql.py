"""Just enough of InfluxDB 1.x's HTTP query API: InfluxQL statements with basic auth, one-line errors."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class InfluxError(Exception):
    """InfluxDB refused a statement or could not be reached; one line."""


def reason(exc: BaseException) -> str:
    """What went wrong with a request, in words: "connection refused", "no answer within 30 s", not urllib's repr."""
    inner = exc.reason if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException) else exc
    if isinstance(inner, TimeoutError):
        return "no answer in time"
    if isinstance(inner, OSError) and inner.strerror:
        return f"cannot connect: {inner.strerror.lower()}"
    if isinstance(inner, urllib.error.URLError):
        return f"cannot connect: {inner.reason}"
    if isinstance(inner, ValueError):
        return f"not an InfluxDB answer ({inner})"
    return f"{type(inner).__name__}: {inner}"


class Influx:
    def __init__(self, url: str, auth: tuple[str, str] | None = None) -> None:
        self.url = url.rstrip("/")
        self.auth = auth

    def wait_ready(self, timeout: float) -> None:
        """Poll /ping until the server answers (influxd opens its port seconds after it starts)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2):  # noqa: S310  (configured URL)
                    return
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise InfluxError(f"{self.url}: not answering after {timeout:g} s ({reason(exc)})") from None
                time.sleep(0.5)

    def query(self, q: str, db: str | None = None, *, epoch: str | None = None) -> list[dict[str, Any]]:
        """Run InfluxQL; returns the ``results`` list."""
        params = {"q": q}
        if db:
            params["db"] = db
        if epoch:
            params["epoch"] = epoch
        data = urllib.parse.urlencode(params).encode()
        req = urllib.request.Request(f"{self.url}/query", data=data, method="POST")  # noqa: S310  (configured URL)
        if self.auth is not None:
            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310  (configured URL)
                body = json.load(r)
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace").strip()
            raise InfluxError(f"{self.url}: {exc.code} {text}") from None
        except (OSError, ValueError) as exc:
            raise InfluxError(f"{self.url}: {reason(exc)}") from None
        results: list[dict[str, Any]] = body.get("results", [])
        for res in results:
            if "error" in res:
                raise InfluxError(f"{self.url}: {res['error']} (in: {q[:120]})")
        return results

    def write(self, lines: list[str], db: str, rp: str | None = None) -> None:
        """POST line protocol (nanosecond timestamps) to /write."""
        params = {"db": db, "precision": "ns", **({"rp": rp} if rp else {})}
        url = f"{self.url}/write?{urllib.parse.urlencode(params)}"
        req = urllib.request.Request(url, data="\n".join(lines).encode(), method="POST")  # noqa: S310
        if self.auth is not None:
            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=30):  # noqa: S310  (configured URL)
                pass
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace").strip()
            raise InfluxError(f"{self.url}: write: {exc.code} {text}") from None
        except OSError as exc:
            raise InfluxError(f"{self.url}: write: {reason(exc)}") from None

    def rows(self, q: str, db: str | None = None, *, epoch: str | None = None) -> list[dict[str, Any]]:
        """Every row of every series, as dicts with the series' tags merged in."""
        out: list[dict[str, Any]] = []
        for res in self.query(q, db, epoch=epoch):
            for series in res.get("series", []):
                tags = series.get("tags", {})
                out.extend({**tags, **dict(zip(series["columns"], v, strict=True))} for v in series.get("values", []))
        return out
