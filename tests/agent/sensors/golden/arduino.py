"""Golden cases of the arduino driver: ``frame.hex`` (the 24 bytes the board sent, as hex; spaces and line breaks
ignored) + ``options.json`` (the sensor's options; conversions as ``{"kind": "polynomial", …}``) → ``expected.lp``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fieldstation.sensors.arduino import Arduino, decode


def run(case: Path) -> tuple[Arduino, Any]:
    sensor = Arduino(**json.loads((case / "options.json").read_text()))
    frame = bytes.fromhex("".join((case / "frame.hex").read_text().split()))
    return sensor, decode(frame, sensor.channels, byte_order=sensor.byte_order, vref=sensor.vref, bits=sensor.bits)
