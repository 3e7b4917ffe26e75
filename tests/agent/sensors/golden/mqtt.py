"""Golden cases of the mqtt driver: ``payload`` (a message's bytes as a device published them) + ``options.json``
(the sensor's options) → ``expected.lp``, decoded by the driver's own decoder."""

from __future__ import annotations

import json
from pathlib import Path

from fieldstation.reading import FieldValue
from fieldstation.sensor import SensorError
from fieldstation.sensors.http_json import PathError
from fieldstation.sensors.mqtt import Mqtt, PayloadError


def run(case: Path) -> tuple[Mqtt, dict[str, FieldValue]]:
    sensor = Mqtt(**json.loads((case / "options.json").read_text()))
    try:
        fields, _ = sensor.decode((case / "payload").read_bytes())
    except (PayloadError, PathError) as exc:  # what read() reports, without the broker and topic before it
        raise SensorError(str(exc)) from None
    return sensor, fields
