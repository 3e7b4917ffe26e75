"""``fieldstation backup verify``, the restore drill: the latest backup restored into scratch databases and compared.

For each database, at or before the moment the backup was taken (``covers.until_ns`` in the manifest):

- the scratch copy holds at least the points the manifest counted then, and the same last timestamp
  (the backup is complete);
- the live database holds at least what the scratch copy holds, counted from the live database's oldest point
  (retention may have dropped old shards since) — more is fine: late writes, a spool catching up;
- every file matches its sha256, Grafana's copy passes ``PRAGMA integrity_check``, each config archive reads, the
  secrets' archive is an age file (and, given ``--age-identity``, decrypts to a readable tar).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import sqlite3
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fieldstation.backup import influx
from fieldstation.backup.backup import AGE_HEADER, SECRETS, STAMP, hostname, influx_target, open_share
from fieldstation.backup.influx import BackupError
from fieldstation.backup.restore import decrypt_secrets, fetch, resolve
from fieldstation.settings import BackupSettings

DRILL_SUFFIX = "_drill"


@dataclass
class Drill:
    name: str = ""
    bytes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def compare(db: str, manifest: dict[str, Any], scratch: dict[str, Any], live: dict[str, Any] | None) -> list[str]:
    """Differences that make the drill fail (see the module's docstring)."""
    problems = []
    for rp, measurements in manifest.items():
        for m, want in measurements.items():
            got = scratch.get(rp, {}).get(m)
            where = f"{db}.{rp}.{m}"
            if got is None:
                problems.append(f"{where}: missing from the restored copy")
                continue
            short = {f: n for f, n in want["counts"].items() if got["counts"].get(f, 0) < n}
            if short:
                problems.append(f"{where}: restored copy has fewer points than backed up ({short})")
            if got["last"] != want["last"]:
                problems.append(f"{where}: last point {got['last']} restored, {want['last']} backed up")
    if live is not None:
        for rp, measurements in scratch.items():
            for m, got in measurements.items():
                have = live.get(rp, {}).get(m, {"counts": {}})
                short = {f: n for f, n in got["counts"].items() if have["counts"].get(f, 0) < n}
                if short:
                    problems.append(f"{db}.{rp}.{m}: the backup holds points the live database lacks ({short})")
    return problems


def check_files(work: Path, identity: Path | None = None) -> list[str]:
    problems = []
    gdb = work / "grafana.db"
    if gdb.exists():
        try:
            with contextlib.closing(sqlite3.connect(f"file:{gdb}?mode=ro", uri=True)) as con:
                result = con.execute("PRAGMA integrity_check").fetchone()[0]
        except sqlite3.Error as exc:
            result = str(exc)
        if result != "ok":
            problems.append(f"grafana.db: integrity check: {result}")
    for archive in sorted((work / "configs").glob("*.tar.gz")):
        try:
            with tarfile.open(archive) as tar:
                tar.getmembers()
        except (OSError, tarfile.TarError, EOFError) as exc:
            problems.append(f"configs/{archive.name}: unreadable: {exc}")
    secrets = work / SECRETS
    if secrets.exists():
        with secrets.open("rb") as f:
            if f.read(len(AGE_HEADER)) != AGE_HEADER:
                problems.append(f"{SECRETS}: not an age file")
        if identity is not None and not problems:
            try:
                decrypt_secrets(secrets, identity)
            except BackupError as exc:
                problems.append(str(exc))
    return problems


def run_verify(
    settings: BackupSettings,
    *,
    host: str | None = None,
    age_identity: Path | None = None,
    say: Callable[[str], None] = print,
) -> Drill:
    host = host or hostname()
    target = influx_target(settings)
    client = target.client
    drill = Drill()
    work = settings.work_dir / "verify"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, mode=0o700)
    try:
        with open_share(settings, say) as share:
            drill.name = resolve(share, host, None)
            say(f"restore drill of {settings.share.rstrip('/')}/{host}/{drill.name}")
            manifest = fetch(share, f"{host}/{drill.name}", work, say, sd_image=True)
        drill.bytes = sum(int(f["bytes"]) for f in manifest["files"].values())
        taken = dt.datetime.strptime(drill.name, STAMP).replace(tzinfo=dt.UTC)
        age_h = (dt.datetime.now(dt.UTC) - taken).total_seconds() / 3600
        if age_h > settings.verify_max_age_h:
            drill.problems.append(f"latest backup is {age_h:.0f} h old (limit {settings.verify_max_age_h:g} h)")
        drill.problems += check_files(work, age_identity)
        until = int(manifest["covers"]["until_ns"])
        live_dbs = influx.databases(client)
        for db, backed_up in sorted(manifest["databases"].items()):
            scratch_db = f"{db}{DRILL_SUFFIX}"
            if scratch_db in live_dbs:
                influx.drop(client, scratch_db)
            influx.restore(target, work / "influxdb", db, scratch_db)
            try:
                scratch = influx.census(client, scratch_db, until)
                live = None
                if db in live_dbs:
                    live = influx.census(client, db, until, since=influx.first_times(client, db))
                    scratch = influx.census(client, scratch_db, until, since=influx.first_times(client, db))
                    full = influx.census(client, scratch_db, until)
                else:
                    drill.problems.append(f"{db}: not in the live InfluxDB")
                    full = scratch
                drill.problems += compare(db, backed_up, full, None) + compare(db, {}, scratch, live)
                points = sum(max(m["counts"].values(), default=0) for rp in full.values() for m in rp.values())
                say(f"InfluxDB: {db}: {points} points restored into {scratch_db} and compared")
            finally:
                influx.drop(client, scratch_db)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for p in drill.problems:
        say(f"FAILED: {p}")
    say(f"restore drill {'passed' if drill.ok else 'failed'}: {host}/{drill.name}")
    return drill
