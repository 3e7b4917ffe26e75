"""UPS through NUT: every numeric variable the UPS offers, and ``ups.status`` decoded into flags.

Every UPS goes through NUT's upsd: USB ones (usbhid-ups), and Eaton network cards through snmp-ups or
netxml-ups, so this one driver covers them all. Variable names follow NUT's (dots become underscores).
"""

from __future__ import annotations

import time
from typing import ClassVar

from pydantic import Field, PrivateAttr, SecretStr

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

#: The fields the overview dashboard shows for a UPS (the UPS dashboard shows more).
DASHBOARD_FIELDS = ("battery_charge", "battery_runtime", "ups_load", "input_voltage", "output_voltage")

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


#: A status token appearing (or, for power_restored, OB going away while OL is there) → the ``event`` field.
EVENTS = {
    "OB": "power_cut",
    "LB": "low_battery",
    "OVER": "overload",
    "RB": "replace_battery",
    "FSD": "forced_shutdown",
}


def events(before: set[str], after: set[str]) -> list[str]:
    """Events between two ``ups.status`` token sets, in a fixed order."""
    out = [event for token, event in EVENTS.items() if token in after and token not in before]
    if "OB" in before and "OB" not in after and "OL" in after:
        out.append("power_restored")
    return out


def _default_units() -> dict[str, str]:
    return {**{field_name(v): u for v, u in UNITS.items()}, "outage_s": "s"}


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

    _tokens: set[str] | None = PrivateAttr(default=None)
    _cut_at: float | None = PrivateAttr(default=None)

    def dashboard_fields(self) -> list[str]:
        return list(DASHBOARD_FIELDS)

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
                fields = decode(c.list_vars(self.ups))
        except NutError as exc:
            raise SensorError(str(exc)) from None
        # Transitions become an `event` field (outage lists and power-cut mails need no state of their own);
        # power_restored carries how long the outage lasted when this agent saw it start.
        tokens = set(str(fields.get("status", "")).split())
        if self._tokens is not None and (found := events(self._tokens, tokens)):
            fields["event"] = ",".join(found)
            now = time.monotonic()
            if "power_cut" in found:
                self._cut_at = now
            if "power_restored" in found and self._cut_at is not None:
                fields["outage_s"] = round(now - self._cut_at, 1)
                self._cut_at = None
        self._tokens = tokens
        return fields
