"""UPS through NUT: every variable NUT defines as a number, with its unit, and ``ups.status`` decoded into flags.

Every UPS goes through NUT's upsd: USB ones (usbhid-ups), and Eaton network cards through snmp-ups or
netxml-ups, so this one driver covers them all. Variable names follow NUT's (dots become underscores).
"""

from __future__ import annotations

import functools
import math
import re
import time
from typing import ClassVar

from pydantic import Field, PrivateAttr, SecretStr

from fieldstation.nut_client import DEFAULT_PORT, NutClient, NutError
from fieldstation.sensor import Sensor, SensorError
from fieldstation.sensors import nut_names

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

#: The fields the overview dashboard shows for a UPS (the UPS dashboard shows more).
DASHBOARD_FIELDS = ("battery_charge", "battery_runtime", "ups_load", "input_voltage", "output_voltage")

#: A number as NUT drivers print one: "230.1", "042.7", "024", "-1.5e3"; some print a decimal comma ("21,52").
NUMBER = re.compile(r"[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][+-]?\d+)?")

#: Fields the driver makes itself, with their units. ``runtime_left`` is ``battery.runtime`` written only while the
#: UPS is on battery (OB), so a dashboard can show the runtime left when it matters and nothing on wall power.
OWN_UNITS = {"outage_s": "s", "runtime_left": "s"}


def field_name(variable: str) -> str:
    return variable.replace(".", "_")


def number(value: str) -> float | None:
    """The value as a float, or None when it is not a plain decimal number (``nan``, ``1_000``, ``5.1.2``)."""
    text = value.strip()
    if NUMBER.fullmatch(text) is None:
        return None
    x = float(text.replace(",", "."))
    return x if math.isfinite(x) else None


def decode(variables: dict[str, str]) -> dict[str, float | bool | str]:
    """upsd's variables → fields, by NUT's naming scheme (:mod:`fieldstation.sensors.nut_names`).

    A variable NUT defines as a number becomes a float field; one NUT defines as text (serial, firmware, dates,
    ``ups.id``, ``ups.model``) is not stored, whatever it looks like; a variable NUT does not name (a driver's own)
    is stored when its value is a plain number. ``ups.status`` becomes ``status`` plus one bool per status flag, and
    on battery ``battery_runtime`` is copied to ``runtime_left``.
    """
    fields: dict[str, float | bool | str] = {}
    for name, value in sorted(variables.items()):
        try:
            if nut_names.kind(name) is nut_names.TEXT:
                continue
        except nut_names.Unknown:
            pass
        x = number(value)
        if x is not None:  # a numeric variable showing text ("unknown", "N/A") has no value this time
            fields[field_name(name)] = x
    status = variables.get("ups.status")
    if status is not None:
        tokens = set(status.split())
        fields["status"] = status
        for token, flag in STATUS_FLAGS.items():
            fields[flag] = token in tokens
        if "OB" in tokens and "battery_runtime" in fields:
            fields["runtime_left"] = fields["battery_runtime"]
    return fields


@functools.lru_cache(maxsize=4096)
def unit_of_field(field: str) -> str:
    """NUT's unit of a field this driver wrote ("" for none). NUT's names hold no underscores, so the field's
    underscores are its variable's dots."""
    if field in OWN_UNITS:
        return OWN_UNITS[field]
    try:
        return nut_names.kind(field.replace("_", ".")) or ""
    except nut_names.Unknown:
        return ""


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


class Nut(Sensor):
    """One UPS served by upsd."""

    driver: ClassVar[str] = "nut"

    ups: str = Field(description="The UPS name in upsd (`upsc -l` lists them).")
    host: str = Field("127.0.0.1", description="upsd's address.")
    port: int = Field(DEFAULT_PORT, ge=1, le=65535, description="upsd's port.")
    username: str | None = Field(None, description="A user from upsd.users; checked once at open.")
    password: SecretStr | None = Field(None, description="Its password (from the vault).")
    unit: str | dict[str, str] = Field(
        default_factory=dict, description="Units per field, over NUT's own (sensors/nut_names.py), which the rest keep."
    )
    interval: float = Field(5.0, description="Seconds between reads.")

    _tokens: set[str] | None = PrivateAttr(default=None)
    _cut_at: float | None = PrivateAttr(default=None)

    def dashboard_fields(self) -> list[str]:
        return list(DASHBOARD_FIELDS)

    def unit_of(self, field_name: str) -> str:
        if isinstance(self.unit, str):
            return self.unit or unit_of_field(field_name)
        return self.unit.get(field_name) or unit_of_field(field_name)

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
