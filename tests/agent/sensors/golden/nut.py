"""Golden cases of the nut driver: ``upsc.txt`` (what `upsc ups@host` printed) + ``options.json`` → ``expected.lp``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fieldstation.sensors.nut import Nut, decode


def run(case: Path) -> tuple[Nut, Any]:
    sensor = Nut(**json.loads((case / "options.json").read_text()))
    variables = dict(line.split(": ", 1) for line in (case / "upsc.txt").read_text().splitlines() if line)
    return sensor, decode(variables)
