"""Golden cases of the modbus driver: ``registers.txt`` (a register dump: ``holding 0x0130: 0x1388 0x5A6E`` gives
the words from that address on) + ``options.json`` → ``expected.lp``. The driver's own request plan picks the words
each request would have returned."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fieldstation.sensors.modbus import Modbus, decode


def run(case: Path) -> tuple[Modbus, Any]:
    sensor = Modbus(**json.loads((case / "options.json").read_text()))
    words: dict[tuple[str, int], int] = {}
    for line in (case / "registers.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        head, values = line.split(":", 1)
        function, start = head.split()
        for i, w in enumerate(values.split()):
            words[(function, int(start, 16) + i)] = int(w, 16)
    answers = [[words[(q.function, q.address + i)] for i in range(q.count)] for q in sensor.requests]
    return sensor, decode(sensor.requests, answers)
