"""``fieldstation influx setup``: the database, its users, retention policies and downsampling, idempotently.

Ansible renders ``/etc/fieldstation/influx-setup.toml`` (0600: it holds the admin and user passwords from the
vault) and runs this after every InfluxDB install or inventory change. Running it twice changes nothing the
second time; a password changed in the vault is applied: the users' directly, the admin's through ``--state`` (the
admin login last in force, kept root-only), so that an image's first-boot password hands over to the vault's.

Layout, with the defaults: raw points in the retention policy ``raw`` (the database's default, kept 35 days);
continuous queries write per-minute means into ``rollup_1m`` (kept a year) and per-hour means into ``rollup_1h``
(kept forever). InfluxQL 1.x names a field's mean ``mean_<field>`` in a rollup (``SELECT mean(*) INTO``); dashboards
select ``/^(mean_)?<field>$/``, which matches ``<field>`` in ``raw`` and ``mean_<field>`` in a rollup. The
``energy`` measurement (kWh and cost per reading, see :mod:`fieldstation.energy`) is summed, not averaged, into each
rollup under the same field names.

Which policy a dashboard reads is data too: the measurement ``rp_config`` in the policy ``fieldstation_meta`` holds
one row per policy with the range of dashboard time spans it serves (raw up to 2 days, 1-min means up to 60 days,
1-h means beyond, by default). Grafana's hidden variable ``$rp`` picks the row for the span shown
(:data:`RP_VARIABLE_QUERY`).
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator

from fieldstation.influxql import Influx, InfluxError
from fieldstation.settings import load_toml

_DURATION = re.compile(r"^(INF|\d+[mhdw])$")
_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _duration(v: str) -> str:
    if not _DURATION.match(v):
        raise ValueError("must be a whole number of m, h, d or w (e.g. 30d), or INF")
    return v


Duration = Annotated[str, AfterValidator(_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Credentials(_Strict):
    username: str = Field(pattern=_NAME)
    password: SecretStr


class User(_Strict):
    name: str = Field(pattern=_NAME)
    password: SecretStr
    privilege: Literal["READ", "WRITE", "ALL"] = Field(description="Granted on the database.")


RAW_POLICY = "raw"
META_POLICY = "fieldstation_meta"
#: Dropped files (logger exports, trend reports): historical data, older than raw points are kept.
FILES_POLICY = "files"
RP_CONFIG = "rp_config"
#: The dashboards' ``$rp`` variable: the policy whose range of time spans holds the span shown.
RP_VARIABLE_QUERY = (
    f'SELECT "rp" FROM "{META_POLICY}"."{RP_CONFIG}" '  # noqa: S608 -- constants only
    'WHERE "min_range_ms" < ${__range_ms} AND "max_range_ms" >= ${__range_ms}'
)
#: Measurements summed (not averaged) into the rollups, with their fields.
SUMMED = {"energy": ("kwh", "cost")}
_UNITS_S = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_seconds(d: str) -> float:
    """``30d`` → 2592000; ``INF`` → infinity."""
    return float("inf") if d == "INF" else int(d[:-1]) * _UNITS_S[d[-1]]


class Client(_Strict):
    """A client of the station's file drops, isolated: its own database and a user that reads only it."""

    name: str = Field(pattern=_NAME, description="The client folder; also its read-only user's name.")
    password: SecretStr
    database: str | None = Field(None, pattern=_NAME, description="Default: client_<name>.")

    @property
    def db(self) -> str:
        return self.database or f"client_{self.name}"


class Rollup(_Strict):
    every: Duration = Field(description="Bucket of the means, e.g. 1m.")
    keep: Duration = Field(description="How long the rollup is kept; INF is forever.")
    max_range: Duration | None = Field(
        None,
        description="Dashboards read this rollup for time spans up to this long; default 86 400 buckets "
        "(1m: 60 days), and any span for the last rollup.",
    )

    @property
    def max_range_s(self) -> float:
        return duration_seconds(self.max_range) if self.max_range else duration_seconds(self.every) * 86400

    @property
    def policy(self) -> str:
        return f"rollup_{self.every}"


class Retention(_Strict):
    raw: Duration = Field("35d", description="How long raw points are kept (≥ 32 days: 30-day panels read raw).")
    raw_max_range: Duration = Field("2d", description="Dashboards read raw points for time spans up to this long.")
    files: Duration = Field("INF", description="How long dropped files' points are kept (policy `files`).")
    rollups: list[Rollup] = Field(
        default_factory=lambda: [Rollup(every="1m", keep="365d"), Rollup(every="1h", keep="INF")], min_length=1
    )

    @model_validator(mode="after")
    def _ranges_grow(self) -> Retention:
        spans = [duration_seconds(self.raw_max_range), *(r.max_range_s for r in self.rollups[:-1])]
        if any(b <= a for a, b in itertools.pairwise(spans)):
            raise ValueError("raw_max_range and each rollup's max_range must grow, finest rollup first")
        return self

    def policies(self) -> list[tuple[str, float, float]]:
        """(policy, min span, max span) in seconds: the rows of ``rp_config``. The last rollup serves any span."""
        highs = [duration_seconds(self.raw_max_range), *(r.max_range_s for r in self.rollups[:-1]), float("inf")]
        names = [RAW_POLICY, *(r.policy for r in self.rollups)]
        return [(name, ([0.0, *highs][i]), highs[i]) for i, name in enumerate(names)]


class InfluxSetup(_Strict):
    url: str = Field("http://127.0.0.1:8086", pattern=r"^https?://")
    database: str = Field("fieldstation", pattern=_NAME)
    admin: Credentials
    users: list[User] = Field(default_factory=list)
    retention: Retention = Field(default_factory=Retention)
    clients: list[Client] = Field(default_factory=list)


def load_setup(path: Path) -> InfluxSetup:
    return load_toml(path, InfluxSetup)


def _quote(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def continuous_query(db: str, source_rp: str, rollup: Rollup) -> tuple[str, str]:
    """(name, statement) of the continuous query filling one rollup with per-bucket means of every field."""
    name = f"cq_{rollup.policy}"
    # Names are validated identifiers and durations validated units: nothing free-form reaches the statement.
    select = (
        f'SELECT mean(*) INTO "{db}"."{rollup.policy}".:MEASUREMENT FROM "{db}"."{source_rp}"./.*/ '  # noqa: S608
        f"GROUP BY time({rollup.every}), *"
    )
    return name, f'CREATE CONTINUOUS QUERY "{name}" ON "{db}" BEGIN {select} END'


def summed_query(db: str, source_rp: str, rollup: Rollup, measurement: str, fields: tuple[str, ...]) -> tuple[str, str]:
    """(name, statement) of the continuous query summing a measurement of amounts (energy) into one rollup."""
    name = f"cq_{measurement}_{rollup.policy}"
    sums = ", ".join(f'sum("{f}") AS "{f}"' for f in fields)
    select = (
        f'SELECT {sums} INTO "{db}"."{rollup.policy}"."{measurement}" '  # noqa: S608 -- validated names only
        f'FROM "{db}"."{source_rp}"."{measurement}" GROUP BY time({rollup.every}), *'
    )
    return name, f'CREATE CONTINUOUS QUERY "{name}" ON "{db}" BEGIN {select} END'


def continuous_queries(db: str, retention: Retention) -> dict[str, str]:
    """Every continuous query the configuration wants, by name."""
    wanted = dict(continuous_query(db, RAW_POLICY, r) for r in retention.rollups)
    for measurement, fields in SUMMED.items():
        wanted.update(summed_query(db, RAW_POLICY, r, measurement, fields) for r in retention.rollups)
    return wanted


def rp_config_lines(retention: Retention) -> list[str]:
    """The rows of ``rp_config``: fixed timestamps, so rewriting them replaces them (idempotent)."""
    lines = []
    for i, (policy, low, high) in enumerate(retention.policies()):
        high_ms = 10**15 if high == float("inf") else int(high * 1000)  # ~31 700 years: "any span"
        lines.append(
            f'{RP_CONFIG},policy={policy} rp="{policy}",min_range_ms={int(low * 1000)}i,max_range_ms={high_ms}i {i}'
        )
    return lines


def _same_duration(influx_value: str, wanted: str) -> bool:
    """InfluxDB reports 30d as 720h0m0s and INF as 0s."""
    if wanted == "INF":
        return influx_value == "0s"
    units = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
    seconds = int(wanted[:-1]) * units[wanted[-1]]
    parts = re.findall(r"(\d+)([hms])", influx_value)
    return sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts) == seconds


def _refused(exc: InfluxError) -> bool:
    return ": 401 " in str(exc)


def _in_force(state: Path | None) -> tuple[str, str] | None:
    """The admin login that worked last time (``--state``), if any."""
    if state is None or not state.exists():
        return None
    try:
        data = json.loads(state.read_text())
        return str(data["username"]), str(data["password"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InfluxError(f"{state}: not a state file of influx setup ({type(exc).__name__}): delete it") from None


def remember(state: Path, username: str, password: str) -> None:
    """Keep the admin login now in force, root-only, atomically (the next run may need it to rotate)."""
    text = json.dumps({"username": username, "password": password})
    if state.exists() and state.read_text() == text:
        return
    state.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = state.with_name(state.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, state)


def _hand_over(cfg: InfluxSetup, exc: InfluxError, state: Path | None, say: Callable[[str], None]) -> int:
    """The setup file's admin password is refused: if the one last in force (first boot's random one, an earlier
    vault's) still works, make the setup file's the one in force. The setup file (the vault) is the truth."""
    previous = _in_force(state)
    wanted = cfg.admin.password.get_secret_value()
    if previous is None or previous == (cfg.admin.username, wanted):
        raise exc
    old = Influx(cfg.url, previous)
    try:
        old.query(f'SET PASSWORD FOR "{cfg.admin.username}" = {_quote(wanted)}')
    except InfluxError as old_exc:
        if not _refused(old_exc):
            raise
        raise InfluxError(
            f"{exc}; the admin password last in force ({state}) is refused too: set the admin's password by hand "
            f"(influx -username {cfg.admin.username} -password <current> -execute \"SET PASSWORD FOR "
            f"{cfg.admin.username} = '<the vault's>'\"), then run this again"
        ) from None
    say(f"admin user {cfg.admin.username}: password set to the setup file's (it was the one in {state})")
    return 1


def _ensure_admin(cfg: InfluxSetup, admin: Influx, say: Callable[[str], None], state: Path | None = None) -> int:
    try:
        admin.query("SHOW USERS")
    except InfluxError as exc:
        if _refused(exc):
            return _hand_over(cfg, exc, state, say)
        if "create admin user first" not in str(exc):
            raise
        # A fresh server with auth on accepts exactly one unauthenticated statement: creating the admin.
        Influx(cfg.url).query(
            f'CREATE USER "{cfg.admin.username}" WITH PASSWORD {_quote(cfg.admin.password.get_secret_value())} '
            "WITH ALL PRIVILEGES"
        )
        say(f"admin user {cfg.admin.username}: created")
        return 1
    return 0


def _ensure_database(db: str, admin: Influx, say: Callable[[str], None]) -> int:
    if db in {r["name"] for r in admin.rows("SHOW DATABASES")}:
        say(f"database {db}: exists")
        return 0
    admin.query(f'CREATE DATABASE "{db}"')
    say(f"database {db}: created")
    return 1


def _ensure_users(cfg: InfluxSetup, admin: Influx, say: Callable[[str], None]) -> int:
    changes = 0
    db = cfg.database
    users = {r["user"] for r in admin.rows("SHOW USERS")}
    for user in cfg.users:
        password = _quote(user.password.get_secret_value())
        if user.name in users:
            admin.query(f'SET PASSWORD FOR "{user.name}" = {password}')  # the vault is the truth
            state = "exists, password set"
        else:
            admin.query(f'CREATE USER "{user.name}" WITH PASSWORD {password}')
            state = "created"
            changes += 1
        grants = {r["database"]: r["privilege"] for r in admin.rows(f'SHOW GRANTS FOR "{user.name}"')}
        wanted = {"READ": "READ", "WRITE": "WRITE", "ALL": "ALL PRIVILEGES"}[user.privilege]
        if grants.get(db) != wanted:
            admin.query(f'REVOKE ALL ON "{db}" FROM "{user.name}"')
            admin.query(f'GRANT {user.privilege} ON "{db}" TO "{user.name}"')
            state += f", granted {user.privilege}"
            changes += 1
        say(f"user {user.name}: {state}")
    return changes


def _ensure_retention(cfg: InfluxSetup, admin: Influx, say: Callable[[str], None]) -> int:
    changes = 0
    db = cfg.database
    policies = {r["name"]: r for r in admin.rows(f'SHOW RETENTION POLICIES ON "{db}"')}
    wanted = [
        (RAW_POLICY, cfg.retention.raw, True),
        (META_POLICY, "INF", False),
        (FILES_POLICY, cfg.retention.files, False),
    ]
    wanted += [(r.policy, r.keep, False) for r in cfg.retention.rollups]
    for name, keep, default in wanted:
        have = policies.get(name)
        suffix = " DEFAULT" if default else ""
        if have is None:
            admin.query(f'CREATE RETENTION POLICY "{name}" ON "{db}" DURATION {keep} REPLICATION 1{suffix}')
            say(f"retention policy {name}: created, {keep}{suffix.lower()}")
            changes += 1
        elif not _same_duration(have["duration"], keep) or bool(have["default"]) != default:
            admin.query(f'ALTER RETENTION POLICY "{name}" ON "{db}" DURATION {keep}{suffix}')
            say(f"retention policy {name}: changed to {keep}{suffix.lower()}")
            changes += 1
        else:
            say(f"retention policy {name}: {keep}{suffix.lower()}, as configured")
    return changes


def _ensure_continuous_queries(cfg: InfluxSetup, admin: Influx, say: Callable[[str], None]) -> int:
    changes = 0
    db = cfg.database
    have: dict[str, str] = {}
    for res in admin.query("SHOW CONTINUOUS QUERIES"):
        for series in res.get("series", []):
            if series["name"] == db:
                have.update({v[0]: v[1] for v in series.get("values", [])})
    wanted = continuous_queries(db, cfg.retention)
    for name, statement in wanted.items():
        if have.get(name) == statement.replace('"', ""):  # InfluxDB stores it without the quotes
            say(f"continuous query {name}: as configured")
            continue
        if name in have:
            admin.query(f'DROP CONTINUOUS QUERY "{name}" ON "{db}"')
        admin.query(statement)
        say(f"continuous query {name}: {'replaced' if name in have else 'created'}")
        changes += 1
    for name in sorted(set(have) - set(wanted)):
        if name.startswith("cq_") and "_rollup_" in f"_{name[3:]}":  # ours, from a rollup no longer configured
            admin.query(f'DROP CONTINUOUS QUERY "{name}" ON "{db}"')
            say(f"continuous query {name}: dropped")
            changes += 1
    return changes


def _ensure_rp_config(cfg: InfluxSetup, admin: Influx, say: Callable[[str], None]) -> int:
    lines = rp_config_lines(cfg.retention)
    have = admin.rows(f'SELECT * FROM "{META_POLICY}"."{RP_CONFIG}"', cfg.database)  # noqa: S608 -- constants
    current = sorted((r["rp"], r["min_range_ms"], r["max_range_ms"]) for r in have)
    wanted = sorted(
        (p, int(lo * 1000), 10**15 if hi == float("inf") else int(hi * 1000)) for p, lo, hi in cfg.retention.policies()
    )
    if current == wanted:
        say("dashboard retention choice (rp_config): as configured")
        return 0
    if have:
        admin.query(f'DROP SERIES FROM "{RP_CONFIG}"', cfg.database)
    admin.write(lines, cfg.database, META_POLICY)
    say("dashboard retention choice (rp_config): " + ", ".join(f"{p} up to {hi}" for p, _, hi in wanted))
    return 1


def _ensure_clients(cfg: InfluxSetup, admin: Influx, say: Callable[[str], None]) -> int:
    """Per client: a database holding the `files` policy, its read-only user, and the writers' grants on it."""
    changes = 0
    databases = {r["name"] for r in admin.rows("SHOW DATABASES")}
    users = {r["user"] for r in admin.rows("SHOW USERS")}
    writers = [u.name for u in cfg.users if u.privilege in ("WRITE", "ALL")]
    for client in cfg.clients:
        db = client.db
        if db not in databases:
            admin.query(f'CREATE DATABASE "{db}"')
            say(f"client {client.name}: database {db} created")
            changes += 1
        policies = {r["name"] for r in admin.rows(f'SHOW RETENTION POLICIES ON "{db}"')}
        if FILES_POLICY not in policies:
            admin.query(
                f'CREATE RETENTION POLICY "{FILES_POLICY}" ON "{db}" DURATION {cfg.retention.files} REPLICATION 1'
            )
            changes += 1
        password = _quote(client.password.get_secret_value())
        if client.name in users:
            admin.query(f'SET PASSWORD FOR "{client.name}" = {password}')
        else:
            admin.query(f'CREATE USER "{client.name}" WITH PASSWORD {password}')
            changes += 1
        grants = {r["database"]: r["privilege"] for r in admin.rows(f'SHOW GRANTS FOR "{client.name}"')}
        if grants != {db: "READ"}:
            for other in grants:
                admin.query(f'REVOKE ALL ON "{other}" FROM "{client.name}"')
            admin.query(f'GRANT READ ON "{db}" TO "{client.name}"')
            changes += 1
        for writer in writers:
            have = {r["database"]: r["privilege"] for r in admin.rows(f'SHOW GRANTS FOR "{writer}"')}
            if have.get(db) not in ("WRITE", "ALL PRIVILEGES"):
                admin.query(f'GRANT WRITE ON "{db}" TO "{writer}"')
                changes += 1
        say(f"client {client.name}: database {db}, read-only user {client.name}")
    return changes


def setup(cfg: InfluxSetup, say: Callable[[str], None] = print, state: Path | None = None) -> int:
    """Bring InfluxDB to the configured state; returns the number of changes made. ``state``: a root-only file
    keeping the admin login in force, so that a new admin password (the vault's after first boot's) is handed over."""
    admin = Influx(cfg.url, (cfg.admin.username, cfg.admin.password.get_secret_value()))
    changes = _ensure_admin(cfg, admin, say, state)
    if state is not None:
        remember(state, cfg.admin.username, cfg.admin.password.get_secret_value())
    changes += _ensure_database(cfg.database, admin, say)
    changes += _ensure_users(cfg, admin, say)
    changes += _ensure_retention(cfg, admin, say)
    changes += _ensure_continuous_queries(cfg, admin, say)
    changes += _ensure_rp_config(cfg, admin, say)
    changes += _ensure_clients(cfg, admin, say)
    say(f"{changes} change{'s' if changes != 1 else ''}")
    return changes
