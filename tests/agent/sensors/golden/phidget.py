"""Golden cases of the phidget driver: ``events.json`` (what phidget22 fired, in order: ``["attach"]``,
``["temperature", 21.4]``, ``["error", 4113, "Open Circuit"]``, ``["detach"]``) + ``options.json`` → ``expected.lp``,
or ``expected_error.txt`` when the read must fail. The events go through the stand-in channel of
tests/harness/phidget.py; the driver's own handlers turn them into state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fieldstation.sensors import phidget
from harness.phidget import StandInChannel


def run(case: Path) -> tuple[phidget.Phidget, Any]:
    sensor = phidget.Phidget(**json.loads((case / "options.json").read_text()))
    ch = StandInChannel(attach_at_open=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(phidget, "new_channel", lambda: ch)
        mp.setattr(ch, "openWaitForAttachment", lambda timeout_ms: None)
        sensor.open()
    try:
        for event, *args in json.loads((case / "events.json").read_text()):
            if event == "error":
                ch.handlers["error"](ch, *args)
            else:
                getattr(ch, {"temperature": "temperature_change"}.get(event, event))(*args)
        return sensor, sensor.read()
    finally:
        sensor.close()
