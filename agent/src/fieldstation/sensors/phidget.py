"""Phidget thermocouples (TMP1100/TMP1101 VINT boards, 1048 PhidgetTemperatureSensor) through phidget22.

A sensor is one TemperatureSensor channel, addressed by hub serial number, hub port and channel. The library runs
its own threads: attach, detach, temperature and error events update this driver's state, and ``read`` returns the
latest temperature. An open thermocouple or a value out of the board's range arrives as an error event and is
reported as a failed read until a good value comes back, never as a temperature.

phidget22 is the ``phidget`` extra, imported only when a Phidget sensor is opened.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr

from fieldstation.sensor import Sensor, SensorError

#: phidget22 error-event codes (``ErrorEventCode``) that mean "no valid temperature right now".
BAD_VALUE_EVENTS = {
    4103: "out of range",  # EEPHIDGET_OUTOFRANGE
    4105: "saturated",  # EEPHIDGET_SATURATION
    4113: "open circuit: thermocouple disconnected or broken",  # EEPHIDGET_BADCONNECTION
    4114: "above the measurable range",  # EEPHIDGET_OUTOFRANGEHIGH
    4115: "below the measurable range",  # EEPHIDGET_OUTOFRANGELOW
}
#: ``ErrorEventCode.EEPHIDGET_OK``: the error state has cleared.
EVENT_OK = 4096
#: ``ErrorCode`` values of exceptions from getTemperature that mean "no valid temperature right now".
UNKNOWN_VALUE_CODES = {51, 60, 61}  # EPHIDGET_UNKNOWNVAL, _UNKNOWNVALHIGH, _UNKNOWNVALLOW
#: ``ErrorCode.EPHIDGET_TIMEOUT``, raised by openWaitForAttachment when no such channel shows up.
TIMEOUT_CODE = 3

#: Thermocouple letter → ``ThermocoupleType`` value.
THERMOCOUPLE_TYPES = {"J": 1, "K": 2, "E": 3, "T": 4}


def new_channel() -> Any:
    """A phidget22 TemperatureSensor channel object (tests replace this with a stand-in)."""
    from Phidget22.Devices.TemperatureSensor import TemperatureSensor

    return TemperatureSensor()


def describe(exc: BaseException) -> str:
    """A PhidgetException in one line: its description, code and details."""
    code = getattr(exc, "code", None)
    desc = getattr(exc, "description", "") or type(exc).__name__
    details = " ".join(str(getattr(exc, "details", "") or "").split())  # the library's details span lines
    return f"{desc} (code {code})" + (f": {details}" if details else "")


class Phidget(Sensor):
    """One thermocouple input of a Phidget temperature board."""

    driver: ClassVar[str] = "phidget"
    requires: ClassVar[tuple[str, ...]] = ("Phidget22",)

    serial: int | None = Field(None, ge=0, description="Serial number of the VINT hub or board; None: any.")
    hub_port: int | None = Field(None, ge=0, le=5, description="VINT hub port the board is plugged into.")
    channel: int = Field(0, ge=0, description="Thermocouple input on the board (0–3 on a TMP1101).")
    thermocouple: Literal["J", "K", "E", "T"] = Field("K", description="Thermocouple type.")
    data_interval: int | None = Field(
        None, ge=1, description="Milliseconds between the board's readings; default: the sensor's interval."
    )
    attach_timeout: float = Field(5.0, gt=0, description="Seconds to wait for the channel to attach at open.")
    unit: str | dict[str, str] = "°C"
    interval: float = Field(1.0, description="Seconds between reads.")

    _ch: Any = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _attached: bool = PrivateAttr(default=False)
    _value: float | None = PrivateAttr(default=None)
    _error: str | None = PrivateAttr(default=None)

    def declared_fields(self) -> list[str]:
        return ["value"]

    @property
    def address(self) -> str:
        parts = [f"serial {self.serial}" if self.serial is not None else "any serial"]
        if self.hub_port is not None:
            parts.append(f"hub port {self.hub_port}")
        parts.append(f"channel {self.channel}")
        return ", ".join(parts)

    # -- events (called from phidget22's threads) -------------------------------------------------

    def _on_attach(self, ch: Any) -> None:
        # Settings are lost on detach and may only be set while attached: apply them at every attach.
        ch.setThermocoupleType(THERMOCOUPLE_TYPES[self.thermocouple])
        ch.setDataInterval(self.data_interval or max(int(self.interval * 1000), 1))
        with self._lock:
            self._attached, self._value, self._error = True, None, None

    def _on_detach(self, ch: Any) -> None:
        with self._lock:
            self._attached, self._value = False, None

    def _on_temperature(self, ch: Any, temperature: float) -> None:
        with self._lock:
            self._value, self._error = temperature, None

    def _on_error(self, ch: Any, code: int, description: str) -> None:
        with self._lock:
            if code == EVENT_OK:
                self._error = None
            elif code in BAD_VALUE_EVENTS:
                self._value, self._error = None, f"{BAD_VALUE_EVENTS[code]} ({description})"

    # -- the contract ------------------------------------------------------------------------------

    def open(self) -> None:
        from Phidget22.PhidgetException import PhidgetException

        ch = new_channel()
        try:
            if self.serial is not None:
                ch.setDeviceSerialNumber(self.serial)
            if self.hub_port is not None:
                ch.setHubPort(self.hub_port)
            ch.setChannel(self.channel)
            ch.setOnAttachHandler(self._on_attach)
            ch.setOnDetachHandler(self._on_detach)
            ch.setOnTemperatureChangeHandler(self._on_temperature)
            ch.setOnErrorHandler(self._on_error)
            ch.openWaitForAttachment(int(self.attach_timeout * 1000))
        except PhidgetException as exc:
            self._close_channel(ch)
            if getattr(exc, "code", None) == TIMEOUT_CODE:
                raise SensorError(
                    f"no Phidget temperature channel at {self.address} attached within {self.attach_timeout:g} s: "
                    f"{describe(exc)}"
                ) from None
            raise SensorError(f"Phidget at {self.address}: {describe(exc)}") from None
        self._ch = ch

    def read(self) -> float:
        from Phidget22.PhidgetException import PhidgetException

        if self._ch is None:
            self.open()
        with self._lock:
            attached, value, error = self._attached, self._value, self._error
        if not attached:
            raise SensorError(f"Phidget at {self.address} is detached (unplugged, or the hub lost power)")
        if error is not None:
            raise SensorError(f"Phidget at {self.address}: {error}", reopen=False)
        if value is not None:
            return value
        try:  # attached, but no event yet: ask the library
            return float(self._ch.getTemperature())
        except PhidgetException as exc:
            if getattr(exc, "code", None) in UNKNOWN_VALUE_CODES:
                raise SensorError(
                    f"Phidget at {self.address}: no valid temperature yet ({describe(exc)})", reopen=False
                ) from None
            raise SensorError(f"Phidget at {self.address}: {describe(exc)}") from None

    @staticmethod
    def _close_channel(ch: Any) -> None:
        with contextlib.suppress(Exception):  # closing a channel that never opened is harmless
            ch.close()

    def close(self) -> None:
        if self._ch is not None:
            ch, self._ch = self._ch, None
            self._close_channel(ch)
        with self._lock:
            self._attached, self._value, self._error = False, None, None
