"""Golden cases of the http_json driver: ``response.json`` (the body the server sent) + ``options.json`` (the
sensor's options) → ``expected.lp``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fieldstation.sensors.http_json import HttpJson, decode


def run(case: Path) -> tuple[HttpJson, Any]:
    sensor = HttpJson(**json.loads((case / "options.json").read_text()))
    return sensor, decode(json.loads((case / "response.json").read_bytes()), sensor.fields)
