"""Golden cases of the onewire driver: ``devices/`` (a w1 sysfs tree as the kernel lays it out, captured from a Pi)
+ ``options.json`` (the sensor's options) → ``expected.lp``. The driver reads the tree itself: the files are the
hardware boundary."""

from __future__ import annotations

import json
from pathlib import Path

from fieldstation.sensors.onewire import Onewire


def run(case: Path) -> tuple[Onewire, dict[str, float]]:
    sensor = Onewire(**json.loads((case / "options.json").read_text()), root=str(case / "devices"))
    return sensor, sensor.read()
