"""InfluxDB's side of a backup: ``influxd backup -portable`` / ``influxd restore -portable`` over the loopback backup
port, and a census of what a database holds (field counts and last timestamp per measurement, per policy)."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fieldstation.influxql import Influx, InfluxError

#: census[database][policy][measurement] = {"counts": {field: n}, "last": ns}
Census = dict[str, dict[str, dict[str, dict[str, Any]]]]
SYSTEM_DATABASES = ("_internal",)


class BackupError(Exception):
    """A backup, restore or drill step failed; one line."""


@dataclass
class InfluxTarget:
    url: str
    auth: tuple[str, str] | None
    rpc: str

    @property
    def client(self) -> Influx:
        return Influx(self.url, self.auth)


def _influxd(*args: str, what: str) -> str:
    binary = shutil.which("influxd")
    if binary is None:
        raise BackupError(f"{what}: influxd not found (apt-get install influxdb)")
    proc = subprocess.run([binary, *args], capture_output=True, text=True, timeout=6 * 3600, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise BackupError(f"{what}: influxd {args[0]} exited with {proc.returncode}: {lines[-1] if lines else ''}")
    return proc.stdout + proc.stderr


def influxd_version() -> str:
    return _influxd("version", what="influxd version").strip()


def backup(target: InfluxTarget, dest: Path) -> None:
    """An online portable backup of every database (the running server keeps taking writes)."""
    _influxd("backup", "-portable", "-host", target.rpc, str(dest), what=f"InfluxDB backup from {target.rpc}")


def restore(target: InfluxTarget, src: Path, db: str, newdb: str, timeout: float = 120.0) -> None:
    """Restore ``db`` from a portable backup as ``newdb``; returns once its shards answer queries."""
    _influxd(
        "restore",
        "-portable",
        "-host",
        target.rpc,
        "-db",
        db,
        "-newdb",
        newdb,
        str(src),
        what=f"InfluxDB restore of {db} as {newdb} via {target.rpc}",
    )
    # influxd restore returns once it has sent the shards; the server imports each one after that (disabled
    # meanwhile: "shard is disabled", "engine is closed"). Done when two counts half a second apart agree.
    client = target.client
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            now = [
                client.query(f'SELECT count(*) FROM "{newdb}"."{rp}"./.*/', newdb)  # noqa: S608 -- InfluxDB's names
                for rp in policies(client, newdb)
            ]
            if now == last:
                return
            last = now
        except InfluxError as exc:
            if not _transient(exc) or time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise BackupError(f"InfluxDB restore of {db} as {newdb}: still importing after {timeout:g} s")
        time.sleep(0.5)


def databases(influx: Influx) -> list[str]:
    return [str(r["name"]) for r in influx.rows("SHOW DATABASES") if r["name"] not in SYSTEM_DATABASES]


def policies(influx: Influx, db: str) -> list[str]:
    return [str(r["name"]) for r in influx.rows(f'SHOW RETENTION POLICIES ON "{db}"')]


#: What InfluxDB answers about a shard a restore has just imported, until it is open and enabled.
TRANSIENT = ("engine is closed", "shard is disabled")


def _transient(exc: InfluxError) -> bool:
    return any(t in str(exc) for t in TRANSIENT)


def _series(influx: Influx, q: str, db: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return [s for res in influx.query(q, db, epoch="ns") for s in res.get("series", [])]
        except InfluxError as exc:
            if not _transient(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def census(influx: Influx, db: str, until_ns: int, since: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
    """Per policy and measurement: each field's count and the last timestamp, for points at or before ``until_ns``.

    ``since[policy][measurement]`` (ns) counts only from there: the live database may have dropped old shards to its
    retention policy since the backup was taken.
    """
    out: dict[str, Any] = {}
    for rp in policies(influx, db):
        counts: dict[str, dict[str, int]] = {}
        last: dict[str, int] = {}
        lows = (since or {}).get(rp)
        # Names come from InfluxDB itself and times are integers: nothing free-form reaches these statements.
        if lows is None:
            queries = [f'SELECT count(*) FROM "{db}"."{rp}"./.*/ WHERE time <= {until_ns}']  # noqa: S608
        else:
            queries = [
                f'SELECT count(*) FROM "{db}"."{rp}"."{m}" WHERE time >= {low} AND time <= {until_ns}'  # noqa: S608
                for m, low in lows.items()
            ]
        for q in queries:
            for s in _series(influx, q, db):
                values = zip(s["columns"][1:], s["values"][0][1:], strict=True)
                counts[s["name"]] = {c.removeprefix("count_"): int(v) for c, v in values if v}
        q = f'SELECT * FROM "{db}"."{rp}"./.*/ WHERE time <= {until_ns} ORDER BY time DESC LIMIT 1'  # noqa: S608
        for s in _series(influx, q, db):
            last[s["name"]] = int(s["values"][0][0])
        out[rp] = {m: {"counts": counts.get(m, {}), "last": last.get(m)} for m in sorted(set(counts) | set(last))}
    return out


def first_times(influx: Influx, db: str) -> dict[str, dict[str, int]]:
    """The oldest point's time per policy and measurement."""
    out: dict[str, dict[str, int]] = {}
    for rp in policies(influx, db):
        q = f'SELECT * FROM "{db}"."{rp}"./.*/ ORDER BY time ASC LIMIT 1'  # noqa: S608 -- names from InfluxDB
        out[rp] = {s["name"]: int(s["values"][0][0]) for s in _series(influx, q, db)}
    return out


def drop(influx: Influx, db: str) -> None:
    influx.query(f'DROP DATABASE "{db}"')


__all__ = ["BackupError", "Census", "InfluxError", "InfluxTarget"]


def backup_db(target: InfluxTarget, db: str, dest: Path) -> None:
    _influxd("backup", "-portable", "-host", target.rpc, "-db", db, str(dest), what=f"InfluxDB backup of {db}")
