"""1-Wire temperature sensors (DS18B20 and its family) through the kernel's w1 sysfs interface.

The kernel's ``w1-gpio`` and ``w1_therm`` modules (``dtoverlay=w1-gpio`` on a Pi) list every device on the bus as
``<root>/<family>-<serial>/``; ``w1_slave`` holds the scratchpad with the kernel's CRC verdict and the temperature
in millidegrees (https://docs.kernel.org/w1/slaves/w1_therm.html)::

    72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
    72 01 4b 46 7f ff 0e 10 57 t=23125

A sensor without ``id`` reads every temperature device it finds (one field per device, named by its id); with
``id`` it reads that one device into the field ``temperature``. Reading one device takes a conversion (~750 ms at
12 bits), so the sensors of one bus are read one after another on one thread (:attr:`Onewire.bus`).

Treated as errors: ``crc=.. NO`` (a noisy line or a loose contact), and 85 °C when the device has given no good
value before (the DS18B20's power-on reset value: the conversion never ran, datasheet "Operation — Measuring
Temperature"), or when it jumps there from more than 10 °C away (the device lost power and reset).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from pydantic import Field, PrivateAttr, field_validator

from fieldstation.sensor import Sensor, SensorError

DEFAULT_ROOT = "/sys/bus/w1/devices"

#: 1-Wire family code → chip, for the temperature sensors w1_therm drives.
FAMILIES = {
    "10": "DS18S20",
    "22": "DS1822",
    "28": "DS18B20",
    "3b": "DS1825 / MAX31850",
}

#: The power-on reset value of the scratchpad, in millidegrees.
POWER_ON_MILLI = 85_000
#: A jump to 85 °C from farther than this (°C) is a reset, not a reading.
POWER_ON_JUMP = 10.0

_ID = re.compile(r"(?P<family>[0-9a-f]{2})-[0-9a-f]{12}")
_CRC = re.compile(r"crc=([0-9a-f]{2}) (YES|NO)")
_T = re.compile(r"t=(-?\d+)")


class W1Error(ValueError):
    """A device's file that holds no valid temperature."""


def decode_w1_slave(text: str) -> int:
    """The temperature in millidegrees from the text of ``w1_slave``; ``W1Error`` on a CRC failure or garbage."""
    lines = text.strip().splitlines()
    crc = _CRC.search(lines[0]) if lines else None
    if crc is None:
        raise W1Error(f"w1_slave holds no CRC verdict: {text.strip()[:60]!r}")
    if crc.group(2) != "YES":
        raise W1Error(f"CRC error (crc={crc.group(1)} NO): noise on the line or a loose contact")
    scratchpad = lines[0].split(":", 1)[0].split()
    if scratchpad and all(b == "00" for b in scratchpad):
        # Zeros pass the CRC (it is 00 too) but no DS18B20 sends them: its config bytes are never 0.
        raise W1Error("the scratchpad reads all zeros: the data line is shorted to ground")
    t = _T.search(lines[1]) if len(lines) > 1 else None
    if t is None:
        raise W1Error(f"w1_slave holds no temperature: {text.strip()[:60]!r}")
    return int(t.group(1))


def decode_temperature(text: str) -> int:
    """The temperature in millidegrees from ``temperature`` (kernels 5.10+; the kernel checked the CRC)."""
    try:
        return int(text.strip())
    except ValueError:
        raise W1Error(f"temperature holds {text.strip()[:60]!r}, not a number") from None


def discover(root: Path) -> list[str]:
    """The ids of the temperature devices under ``root``, sorted."""
    try:
        entries = [p.name for p in root.iterdir()]
    except OSError:
        return []
    return sorted(n for n in entries if (m := _ID.fullmatch(n)) is not None and m.group("family") in FAMILIES)


def read_milli(device: Path) -> int:
    """One device's temperature in millidegrees: ``w1_slave`` (with the CRC verdict), else ``temperature``."""
    for name, decoder in (("w1_slave", decode_w1_slave), ("temperature", decode_temperature)):
        try:
            text = (device / name).read_text(errors="replace")
        except FileNotFoundError:
            continue
        except OSError as exc:  # EIO: the kernel got no answer from the device
            raise W1Error(f"cannot read {name}: {exc.strerror or exc}") from None
        return decoder(text)
    raise W1Error("not on the bus (no w1_slave or temperature file)")


class Onewire(Sensor):
    """DS18B20-family temperature sensors on the kernel's 1-Wire bus: all of them, or the one ``id`` names."""

    driver: ClassVar[str] = "onewire"

    id: str | None = Field(
        None, description="Device id as in /sys/bus/w1/devices (28-0316a2790bff); None reads every one found."
    )
    root: str = Field(DEFAULT_ROOT, description="The w1 sysfs directory listing the devices.")
    unit: str | dict[str, str] = Field("°C", description="Unit of every field.")

    _last: dict[str, float] = PrivateAttr(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _id_form(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip().lower()
        m = _ID.fullmatch(v)
        if m is None:
            raise ValueError(f"id must look like 28-0316a2790bff (family, dash, 12 hex digits), got {v!r}")
        if m.group("family") not in FAMILIES:
            known = ", ".join(f"{k} ({c})" for k, c in FAMILIES.items())
            raise ValueError(f"id {v!r}: family {m.group('family')} is not a temperature sensor ({known})")
        return v

    @property
    def bus(self) -> str:
        # One master reads one device at a time; a conversion blocks ~750 ms.
        return f"w1:{self.root}"

    def declared_fields(self) -> list[str] | None:
        return ["temperature"] if self.id is not None else None

    def dashboard_fields(self) -> list[str]:
        return ["temperature"] if self.id is not None else discover(Path(self.root)) or ["value"]

    def _checked(self, dev_id: str, milli: int) -> float:
        celsius = milli / 1000
        last = self._last.get(dev_id)
        if milli == POWER_ON_MILLI and (last is None or abs(last - celsius) > POWER_ON_JUMP):
            raise W1Error("85 °C power-on value: the device reset or has not converted yet (check its power)")
        self._last[dev_id] = celsius
        return celsius

    def read(self) -> dict[str, float]:
        root = Path(self.root)
        ids = [self.id] if self.id is not None else discover(root)
        if not ids:
            raise SensorError(
                f"no 1-Wire temperature sensor under {root} (is dtoverlay=w1-gpio set and the sensor wired?)",
                reopen=False,
            )
        fields: dict[str, float] = {}
        problems: list[str] = []
        for dev_id in ids:
            try:
                fields["temperature" if self.id is not None else dev_id] = self._checked(
                    dev_id, read_milli(root / dev_id)
                )
            except W1Error as exc:
                problems.append(f"1-Wire {dev_id}: {exc}")
        if problems:
            # One bad device fails the read, so the error is counted and logged; give it its own `id=` sensor to
            # keep the others' readings flowing while it is being fixed.
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise SensorError(problems[0] + more, reopen=False)
        return fields
