"""A stand-in for one phidget22 TemperatureSensor channel: the only piece of hardware we cannot have here.

It records what the driver sets (address, thermocouple type, data interval) and lets a test fire the events the
library would fire from its own threads: attach, detach, temperature change and error. Everything else (the
library, its exceptions and error codes) is the real phidget22.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from Phidget22.ErrorCode import ErrorCode
from Phidget22.ErrorEventCode import ErrorEventCode
from Phidget22.PhidgetException import PhidgetException

import fieldstation.sensors.phidget as phidget_driver


class StandInChannel:
    def __init__(self, attach_at_open: bool = True) -> None:
        self.attach_at_open = attach_at_open
        self.settings: dict[str, Any] = {}
        self.handlers: dict[str, Callable[..., None]] = {}
        self.temperature: float | None = None  # what getTemperature() returns; None raises UNKNOWNVAL
        self.opened = self.closed = False

    # what the driver calls
    def setDeviceSerialNumber(self, v: int) -> None:
        self.settings["serial"] = v

    def setHubPort(self, v: int) -> None:
        self.settings["hub_port"] = v

    def setChannel(self, v: int) -> None:
        self.settings["channel"] = v

    def setThermocoupleType(self, v: int) -> None:
        self.settings["thermocouple"] = v

    def setDataInterval(self, v: int) -> None:
        self.settings["data_interval"] = v

    def setOnAttachHandler(self, h: Callable[..., None]) -> None:
        self.handlers["attach"] = h

    def setOnDetachHandler(self, h: Callable[..., None]) -> None:
        self.handlers["detach"] = h

    def setOnTemperatureChangeHandler(self, h: Callable[..., None]) -> None:
        self.handlers["temperature"] = h

    def setOnErrorHandler(self, h: Callable[..., None]) -> None:
        self.handlers["error"] = h

    def openWaitForAttachment(self, timeout_ms: int) -> None:
        self.opened = True
        if not self.attach_at_open:
            raise PhidgetException(ErrorCode.EPHIDGET_TIMEOUT)
        self.attach()

    def getTemperature(self) -> float:
        if self.temperature is None:
            raise PhidgetException(ErrorCode.EPHIDGET_UNKNOWNVAL)
        return self.temperature

    def close(self) -> None:
        self.closed = True

    # what the test fires, as the library would
    def attach(self) -> None:
        self.handlers["attach"](self)

    def detach(self) -> None:
        self.handlers["detach"](self)

    def temperature_change(self, t: float) -> None:
        self.handlers["temperature"](self, t)

    def error(self, code: ErrorEventCode, description: str) -> None:
        self.handlers["error"](self, int(code), description)


@pytest.fixture
def phidget_channels(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[StandInChannel]]:
    """Every channel the phidget driver creates is a stand-in, appended to this list."""
    channels: list[StandInChannel] = []

    def new_channel() -> StandInChannel:
        channels.append(StandInChannel())
        return channels[-1]

    monkeypatch.setattr(phidget_driver, "new_channel", new_channel)
    yield channels
