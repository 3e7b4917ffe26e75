"""Golden cases of the i2c driver: ``bus.txt`` (a chip's registers or answer, see
:func:`harness.i2c.device_from_dump`) + ``options.json`` (the sensor's options) → ``expected.lp``. The driver runs
its whole open/read/close against the emulated chip on a stand-in bus object (tests/harness/i2c.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fieldstation.sensors import i2c
from harness.i2c import FakeBus, device_from_dump


def run(case: Path) -> tuple[i2c.I2c, dict[str, float]]:
    sensor = i2c.I2c(**json.loads((case / "options.json").read_text()))
    assert sensor.address is not None
    bus = FakeBus({sensor.address: device_from_dump(sensor.chip, (case / "bus.txt").read_text())})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(i2c, "open_bus", lambda number: bus)
        try:
            sensor.open()
            return sensor, sensor.read()
        finally:
            sensor.close()
