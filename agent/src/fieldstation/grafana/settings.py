"""``/etc/fieldstation/grafana.toml``: what Grafana's provisioning needs from the inventory.

Ansible renders it from the inventory; ``fieldstation grafana render`` reads it with the sensors' ``config.py`` and
the agent's ``agent.toml`` (for the tariff's currency and time zone). It holds no secret: InfluxDB credentials reach
Grafana through environment variables (``$FIELDSTATION_INFLUX_USER``, ``$FIELDSTATION_INFLUX_PASSWORD``) from
grafana-server's environment file, and SMTP credentials live in grafana.ini.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

DEFAULT_GRAFANA_SETTINGS = Path("/etc/fieldstation/grafana.toml")
_DURATION = re.compile(r"^\d+[smhd]$")
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(v: str) -> str:
    if not _DURATION.match(v):
        raise ValueError("must be a whole number of s, m, h or d, e.g. 10m")
    return v


Duration = Annotated[str, AfterValidator(_duration)]


def seconds(d: str) -> int:
    return int(d[:-1]) * _UNITS_S[d[-1]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Datasource(_Strict):
    url: str = Field("http://127.0.0.1:8086", pattern=r"^https?://", description="InfluxDB, as Grafana reaches it.")
    database: str = Field("fieldstation", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    user_env: str = Field("FIELDSTATION_INFLUX_USER", description="Environment variable holding the read user.")
    password_env: str = Field("FIELDSTATION_INFLUX_PASSWORD", description="… and its password.")


class Ups(_Strict):
    """UPS facts NUT does not report. Keyed by the nut sensor's name."""

    sensor: str = Field(description="Name of the nut sensor in config.py.")
    rated_power_w: float | None = Field(None, gt=0, description="Rated power; watts = load × this when NUT has none.")
    shutdown_charge: float = Field(20, ge=0, le=100, description="Charge (%) at which the hosts shut down.")
    low_battery_alert: float = Field(40, ge=0, le=100, description="Alert when the charge is at or below this (%).")
    overload_alert: float = Field(90, gt=0, description="Alert when the load is at or above this (%).")


Receiver = Annotated[str, Field(pattern=r"^[^@\s;]+@[^@\s;]+$")]


class Alerts(_Strict):
    folder: str = Field("Fieldstation", description="Grafana folder of the dashboards and alert rules.")
    evaluate_every: Duration = Field("1m", description="How often Grafana evaluates the rules.")
    limit_for: Duration = Field("5m", description="How long a value must be beyond a limit before it alerts.")
    backup_max_age: Duration = Field("26h", description="Alert when the last good backup is older than this.")
    emails: list[Receiver] = Field(default_factory=list, description="Who gets the alert mails.")
    group_by: list[str] = Field(
        default_factory=lambda: ["grafana_folder"], description="Alert labels that split mails into groups."
    )
    group_wait: Duration = Field("1m", description="Wait this long to collect alerts into the first mail.")
    group_interval: Duration = Field("10m", description="At most one mail per group this often.")
    repeat_interval: Duration = Field("4h", description="Resend a still-firing group this often.")
    max_mails_per_hour: int = Field(12, ge=1, description="The mail server's limit; the policy must stay under it.")


class Client(_Strict):
    """A client of the file drops with its own InfluxDB database and read-only user (the inventory's
    ``influxdb_clients``). Its campaign dashboards read that database through a datasource of its own, whose
    credentials reach Grafana through environment variables like the station's."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="The client folder and its InfluxDB user.")
    database: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Default: client_<name>.")

    @property
    def db(self) -> str:
        return self.database or f"client_{self.name}"

    @property
    def datasource_uid(self) -> str:
        return f"fs-client-{self.name}"[:40]

    @property
    def env_prefix(self) -> str:
        return f"FIELDSTATION_CLIENT_{self.name.upper()}"


class Fleet(_Strict):
    """A fleet's central Grafana (role central): VictoriaMetrics holds every station's readings, tagged station."""

    url: str = Field(
        "http://127.0.0.1:8428", pattern=r"^https?://", description="VictoriaMetrics, as Grafana reaches it."
    )
    silent_after: Duration = Field("5m", description="Alert when a station's last reading is older than this.")


class GrafanaSettings(_Strict):
    url: str = Field("http://fieldstation.local:3000", pattern=r"^https?://", description="Links in alert mails.")
    timezone: str = Field("browser", description="Dashboards' time zone.")
    provisioning_path: str = Field(
        "/etc/grafana/provisioning",
        description="Where Grafana reads these files (the provider's JSON path); not set: where render writes them.",
    )
    datasource: Datasource = Field(default_factory=Datasource)
    backups: bool = Field(
        False,
        description="The station backs up (the inventory's backup_enabled): only then are the backup and "
        "restore-drill alerts and the dashboard's Backups row rendered; without, they would alert forever.",
    )
    alerts: Alerts = Field(default_factory=Alerts)
    fleet: Fleet | None = Field(None, description="A fleet's central server: its datasource, dashboard and alert.")
    fleet_only: bool = Field(
        False,
        description="A fleet's central server, which is no station: only [fleet]'s datasource, dashboard and alert "
        "(and mail), no config.py, no InfluxDB datasource, no station dashboards or rules. Needs [fleet].",
    )
    ups: list[Ups] = Field(default_factory=list)
    clients: list[Client] = Field(default_factory=list)
    organizations: bool = Field(
        False,
        description="One Grafana organization per client (created by `fieldstation grafana orgs`), holding only "
        "that client's datasource and dashboards. Off: the clients' folders live in the main organization.",
    )
    orgs_state: Path = Field(
        Path("/var/lib/fieldstation/grafana-orgs.json"),
        description="Client → organization id, written by `fieldstation grafana orgs`, read by the render.",
    )

    @model_validator(mode="after")
    def _unique(self) -> GrafanaSettings:
        if self.fleet_only and self.fleet is None:
            raise ValueError("fleet_only = true needs a [fleet] section (the VictoriaMetrics to read)")
        for what, names in (("ups", [u.sensor for u in self.ups]), ("clients", [c.name for c in self.clients])):
            if len(set(names)) != len(names):
                raise ValueError(f"{what}: each {'sensor' if what == 'ups' else 'name'} may appear once")
        return self

    def client(self, name: str) -> Client | None:
        return next((c for c in self.clients if c.name == name), None)

    def ups_for(self, sensor: str) -> Ups:
        return next((u for u in self.ups if u.sensor == sensor), Ups(sensor=sensor))
