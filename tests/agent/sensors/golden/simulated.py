"""Golden cases of the simulated driver: ``options.json`` (the sensor's options) → ``expected.lp``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from fieldstation.sensors.simulated import Simulated


def run(case: Path) -> tuple[Simulated, Any]:
    sensor = Simulated(**json.loads((case / "options.json").read_text()))
    return sensor, asyncio.run(sensor.read())
