"""UPS through NUT: every numeric variable the UPS offers, and ``ups.status`` decoded into flags.

Every UPS goes through NUT's upsd: USB ones (usbhid-ups), and Eaton network cards through snmp-ups or
netxml-ups, so this one driver covers them all. Variable names follow NUT's (dots become underscores).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr

from fieldstation.nut_client import DEFAULT_PORT, NutClient, NutError
from fieldstation.sensor import Sensor, SensorError

#: ``ups.status`` tokens (NUT developer guide, "Status data") → boolean field.
STATUS_FLAGS = {
    "OL": "on_line",
    "OB": "on_battery",
    "LB": "low_battery",
    "HB": "high_battery",
    "RB": "replace_battery",
    "CHRG": "charging",
    "DISCHRG": "discharging",
    "BYPASS": "bypass",
    "CAL": "calibrating",
    "OFF": "off",
    "OVER": "overloaded",
    "TRIM": "trimming",
    "BOOST": "boosting",
    "FSD": "forced_shutdown",
    "ALARM": "alarm",
    "TEST": "testing",
}

#: NUT variable → unit. A numeric variable not listed here is still stored, without a unit.
UNITS = {
    "battery.charge": "%",
    "battery.charge.low": "%",
    "battery.charge.warning": "%",
    "battery.runtime": "s",
    "battery.runtime.low": "s",
    "battery.voltage": "V",
    "battery.voltage.nominal": "V",
    "battery.temperature": "°C",
    "input.voltage": "V",
    "input.voltage.nominal": "V",
    "input.frequency": "Hz",
    "input.current": "A",
    "output.voltage": "V",
    "output.voltage.nominal": "V",
    "output.frequency": "Hz",
    "output.current": "A",
    "ups.load": "%",
    "ups.realpower": "W",
    "ups.realpower.nominal": "W",
    "ups.power": "VA",
    "ups.power.nominal": "VA",
    "ups.temperature": "°C",
    "ups.delay.shutdown": "s",
    "ups.delay.start": "s",
    "ups.timer.shutdown": "s",
    "ups.timer.start": "s",
}

#: Variables that describe the driver, not the UPS.
SKIPPED_PREFIXES = ("driver.", "device.", "ups.productid", "ups.vendorid")


def field_name(variable: str) -> str:
    return variable.replace(".", "_")


def decode(variables: dict[str, str]) -> dict[str, float | bool | str]:
    """upsd's variables → fields: numbers as floats, ``status`` as text, one bool per status flag."""
    fields: dict[str, float | bool | str] = {}
    for name, value in sorted(variables.items()):
        if name.startswith(SKIPPED_PREFIXES) or name == "ups.status":
            continue
        try:
            fields[field_name(name)] = float(value)
        except ValueError:
            continue  # text (model, serial, beeper status): not a measurement
    status = variables.get("ups.status")
    if status is not None:
        tokens = set(status.split())
        fields["status"] = status
        for token, flag in STATUS_FLAGS.items():
            fields[flag] = token in tokens
    return fields


def _default_units() -> dict[str, str]:
    return {field_name(v): u for v, u in UNITS.items()}


class Nut(Sensor):
    """One UPS served by upsd."""

    driver: ClassVar[str] = "nut"

    ups: str = Field(description="The UPS name in upsd (`upsc -l` lists them).")
    host: str = Field("127.0.0.1", description="upsd's address.")
    port: int = Field(DEFAULT_PORT, ge=1, le=65535, description="upsd's port.")
    username: str | None = Field(None, description="A user from upsd.users; checked once at open.")
    password: SecretStr | None = Field(None, description="Its password (from the vault).")
    unit: str | dict[str, str] = Field(default_factory=_default_units, description="Units per field (NUT's).")
    interval: float = Field(5.0, description="Seconds between reads.")

    def _client(self) -> NutClient:
        # Below the scheduler's read timeout, so a silent upsd is reported as such, not as a hung read.
        return NutClient(self.host, self.port, timeout=min(0.8 * self.read_timeout, 5.0))

    def open(self) -> None:
        try:
            if self.username is not None:
                secret = self.password.get_secret_value() if self.password else ""
                with self._client() as c:
                    c.login(self.ups, self.username, secret)
        except NutError as exc:
            raise SensorError(str(exc)) from None

    def read(self) -> dict[str, float | bool | str]:
        # A connection per read: upsd restarts and network blips heal by themselves, at the cost of one
        # loopback connect every few seconds.
        try:
            with self._client() as c:
                return decode(c.list_vars(self.ups))
        except NutError as exc:
            raise SensorError(str(exc)) from None
