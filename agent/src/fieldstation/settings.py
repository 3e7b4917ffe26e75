"""The agent's host settings: where the spool lives and which servers receive the readings.

Sensors live in ``config.py``; everything about the host lives in the Ansible inventory, which renders
``/etc/fieldstation/agent.toml`` (0600, it may hold sink credentials). Without that file the embedded
defaults apply: a spool under ``/var/lib/fieldstation`` and one sink, the local InfluxDB.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from fieldstation.energy import EnergySettings
from fieldstation.errors import ConfigError
from fieldstation.fleet import TAG_PATTERN
from fieldstation.ingest.inbox import IngestSettings
from fieldstation.mqtt_output import MqttOutputSettings
from fieldstation.paths import DEFAULT_SETTINGS, STATE_DIR

M = TypeVar("M", bound=BaseModel)


def _http_url(v: str) -> str:
    if not v.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return v.rstrip("/")


_AGE_RECIPIENT = re.compile(r"^(age1[02-9ac-hj-np-z]{58}|ssh-(ed25519|rsa) [A-Za-z0-9+/=]+( .*)?)$")


def _age_recipient(v: str) -> str:
    v = v.strip()
    if v.upper().startswith("AGE-SECRET-KEY-"):
        raise ValueError("that is an age identity (a private key): give its public key (age-keygen -y FILE)")
    if not _AGE_RECIPIENT.match(v):
        raise ValueError("not an age recipient: expected age1... (age-keygen) or an ssh-ed25519/ssh-rsa public key")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SinkSettings(_Strict):
    """A server that accepts InfluxDB's ``/write`` (InfluxDB 1.x, 2/3 v1 API, VictoriaMetrics)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Names this sink's cursor over the spool.")
    url: Annotated[str, AfterValidator(_http_url)] = Field("http://127.0.0.1:8086", description="Base URL.")
    database: str = Field("fieldstation", description="db= parameter (a bucket name through InfluxDB 2's v1 API).")
    retention_policy: str | None = Field(
        None, description="rp= parameter for every point; None: the default policy, and dropped files' own (`files`)."
    )
    username: str | None = Field(None, description="Basic-auth user (InfluxDB 1.x auth).")
    password: SecretStr | None = Field(None, description="Basic-auth password.")
    token: SecretStr | None = Field(None, description="Sent as 'Authorization: Token …' (InfluxDB 2/3).")
    batch_size: int = Field(5000, ge=1, le=100_000, description="Points per POST.")
    flush_interval: float = Field(1.0, gt=0, le=60, description="Seconds between POSTs once caught up.")
    timeout: float = Field(10.0, gt=0, description="Seconds per HTTP request.")
    tags: dict[Annotated[str, Field(pattern=TAG_PATTERN)], Annotated[str, Field(pattern=TAG_PATTERN)]] = Field(
        default_factory=dict,
        description="Tags added to every point sent here, not stored locally (a central sink: station = <host>).",
    )


class SpoolSettings(_Strict):
    path: Path = Field(STATE_DIR / "spool.db", description="SQLite spool, on the data drive.")
    max_bytes: int = Field(1 << 30, ge=1 << 20, description="Disk budget; oldest readings dropped beyond it.")
    commit_interval: float = Field(
        0.5, gt=0, le=10, description="Seconds between spool commits: at most this much is unacknowledged."
    )
    max_pending: int = Field(
        100_000, ge=1000, description="Readings held in memory while the spool fails (disk full); oldest dropped."
    )


class BackupSettings(_Strict):
    """``/etc/fieldstation/backup.toml`` (role backup): what ``fieldstation backup`` takes and where it goes."""

    share: str = Field(
        pattern=r"^//[^/\s]+/[^/\s]+(/[^/\s]+)*/?$", description="//server/share[/folder]; backups go in <host>/."
    )
    port: int = Field(445, ge=1, le=65535, description="The NAS's SMB port.")
    credentials: Path = Field(
        Path("/etc/fieldstation/backup.credentials"), description="username=/password= file from the vault, 0600."
    )
    timeout: float = Field(15.0, gt=0, le=300, description="Seconds to wait for the NAS before giving up.")
    keep_last: int = Field(7, ge=0, description="Keep the newest N backups (0: by age only).")
    keep_days: int = Field(14, ge=0, description="Keep backups younger than N days (0: by count only).")
    influx_setup: Path = Field(
        Path("/etc/fieldstation/influx-setup.toml"),
        description="InfluxDB's URL and admin login (re-applied after a restore); absent: influx_url without auth.",
    )
    influx_url: str = Field("http://127.0.0.1:8086", pattern=r"^https?://", description="Used without influx_setup.")
    influx_rpc: str = Field("127.0.0.1:8088", description="influxd's backup port: unauthenticated, loopback only.")
    grafana_db: Path = Field(Path("/var/lib/grafana/grafana.db"), description="Grafana's SQLite database.")
    configs: dict[str, Path] = Field(
        default_factory=lambda: {
            "fieldstation": Path("/etc/fieldstation"),
            "nut": Path("/etc/nut"),
            "grafana": Path("/etc/grafana"),
        },
        description="Folders archived as configs/<name>.tar.gz and put back by a restore.",
    )
    work_dir: Path = Field(Path("/var/cache/fieldstation-backup"), description="Local staging (the data drive).")
    sd_device: Path = Field(Path("/dev/mmcblk0"), description="The card read by --sd-image.")
    verify_max_age_h: float = Field(30.0, gt=0, description="The drill fails when the latest backup is older.")
    age_recipients: list[Annotated[str, AfterValidator(_age_recipient)]] = Field(
        default_factory=list,
        description="age public keys: the config files that hold secrets go to the share encrypted to them (else not"
        " at all). Public keys only: the user keeps the identity (private key) off the Pi.",
    )
    smb_encrypt: Literal["auto", "required"] = Field(
        "auto", description="SMB3 encryption: auto = whenever the server offers it; required = refuse a server without."
    )

    @model_validator(mode="after")
    def _some_rotation(self) -> BackupSettings:
        if not self.keep_last and not self.keep_days:
            raise ValueError("set keep_last, keep_days or both: nothing would ever be deleted")
        return self


class AgentSettings(_Strict):
    config: Path = Field(Path("/etc/fieldstation/config.py"), description="The sensors' config.py.")
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    sinks: list[SinkSettings] = Field(default_factory=lambda: [SinkSettings(name="local")], min_length=1)
    health_interval: float = Field(10.0, ge=1, description="Seconds between the agent's own health readings.")
    state_file: Path = Field(
        STATE_DIR / "state.json",
        description="Live state for `fieldstation sensors`, rewritten every health interval: on a station, in /run.",
    )
    energy_file: Path = Field(
        STATE_DIR / "energy.json", description="The energy counters' last values, kept across reboots."
    )
    energy_save_interval: float = Field(
        600.0, ge=1, description="Seconds between writes of energy_file while counters change (and at a clean stop)."
    )
    energy: EnergySettings = Field(default_factory=EnergySettings, description="Energy counters and tariff table.")
    ingest: IngestSettings | None = Field(None, description="File-drop ingestion: inbox, sources, upload tokens.")
    mqtt_output: MqttOutputSettings | None = Field(
        None, description="Readings and Home Assistant discovery to an MQTT broker (docs/mqtt-output.md)."
    )


def load_toml(path: Path, model: type[M]) -> M:
    """Read a TOML settings file into ``model``; every mistake is a one-line ConfigError naming the file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: {loc}: {msg}") from None


def load_settings(path: Path | None) -> AgentSettings:
    """Read agent.toml; ``None`` means the default path if it exists, else the embedded defaults."""
    if path is None:
        if not DEFAULT_SETTINGS.exists():
            return AgentSettings()
        path = DEFAULT_SETTINGS
    return load_toml(path, AgentSettings)
