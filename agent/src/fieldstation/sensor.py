"""The Sensor contract.

A sensor is a typed, validated description of one device plus three methods: ``open``, ``read`` and
``close``. ``read`` returns raw values; the core turns them into readings (conversion, range check,
precision, tags), schedules the calls, buffers and writes. Drivers never talk to the database.

``read`` may return:

- a number: stored as the field ``value``;
- a mapping of field name to number, bool or string: one device, many fields;
- a :class:`~fieldstation.reading.Reading` or a list of them, for drivers that need full control.

``read`` may be ``async def``; otherwise it runs in a worker thread (one per bus, see :attr:`Sensor.bus`).
Drivers raise :class:`SensorError` (or any exception) on failure; the scheduler logs it once, counts it and
reconnects with backoff.

A user can subclass ``Sensor`` in ``config.py``::

    class Barometer(Sensor):
        port: str = "/dev/ttyUSB0"

        def read(self) -> float:
            with open(self.port) as f:
                return float(f.readline())
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from fieldstation.conversion import Conversion
from fieldstation.reading import FieldValue, Reading

#: Set by the config loader to the path of the config file being executed, so sensors can record the
#: line that created them (for one-line error messages).
loading_file: ContextVar[str | None] = ContextVar("loading_file", default=None)

MIN_INTERVAL = 0.1


class SensorError(Exception):
    """A driver failure worth one log line (device absent, timeout, bad frame).

    ``reopen=False`` says the device is still there but has no valid value (an open thermocouple): the scheduler
    then keeps the connection and polls again at the normal interval instead of reconnecting with backoff.
    """

    def __init__(self, message: str, *, reopen: bool = True) -> None:
        super().__init__(message)
        self.reopen = reopen


class MissingExtra(Exception):
    """A driver's optional dependency is not installed."""

    def __init__(self, driver: str, module: str) -> None:
        self.driver = driver
        self.module = module
        super().__init__(
            f"the {driver!r} driver needs the Python module {module!r}: "
            f"install the extra with pip install 'fieldstation[{driver}]'"
        )


Range = tuple[float, float]


class Sensor(BaseModel):
    """Base class of every sensor. Subclass it and implement :meth:`read`."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_default=True)

    #: One name per driver: its module, its pip extra, its docs section and its default measurement.
    driver: ClassVar[str] = ""
    #: Python modules the driver imports lazily; checked when the config is loaded.
    requires: ClassVar[tuple[str, ...]] = ()

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]+$", description="Unique name; the `sensor` tag.")
    description: str = Field("", description="Shown on dashboards and in alert mails.")
    unit: str | dict[str, str] = Field("", description="Unit of every field, or one per field name.")
    measurement: str | None = Field(None, description="InfluxDB measurement; defaults to the driver name.")
    interval: float = Field(10.0, description="Seconds between reads, 0.1 or more.")
    timeout: float | None = Field(None, gt=0, description="Seconds a read may take; default min(max(interval, 1), 30).")
    precision: int | None = Field(None, ge=0, le=12, description="Decimal places kept; None keeps all.")
    valid_range: Range | dict[str, Range] | None = Field(None, description="(low, high) of plausible values.")
    out_of_range: Literal["drop", "flag"] = Field(
        "drop", description="drop: out-of-range values are dropped and counted; flag: stored with out_of_range=true."
    )
    conversion: Conversion | dict[str, Conversion] | None = Field(None, description="Raw value to physical value.")
    stale_after: int = Field(3, ge=1, description="Intervals without a good reading before the sensor is stale.")
    group: str = Field("", description="Dashboard row; set by grouping sensors in config.py.")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags on every reading.")
    limits: dict[str, Range] = Field(default_factory=dict, description="Alert limits per field: (low, high).")

    _origin: tuple[str, int] | None = PrivateAttr(default=None)

    # -- validation ---------------------------------------------------------------------------------

    @field_validator("interval")
    @classmethod
    def _interval_positive(cls, v: float) -> float:
        if not v >= MIN_INTERVAL:
            raise ValueError(f"interval must be at least {MIN_INTERVAL} s (got {v:g})")
        return v

    @field_validator("valid_range")
    @classmethod
    def _range_ordered(cls, v: Range | dict[str, Range] | None) -> Range | dict[str, Range] | None:
        ranges = v.values() if isinstance(v, dict) else [v] if v is not None else []
        for lo, hi in ranges:
            if not lo < hi:
                raise ValueError(f"valid_range low must be below high (got {lo:g}, {hi:g})")
        return v

    @model_validator(mode="after")
    def _extras_installed(self) -> Sensor:
        for module in type(self).requires:
            try:
                importlib.import_module(module)
            except ImportError:
                raise MissingExtra(type(self).driver or type(self).__name__.lower(), module) from None
        return self

    def model_post_init(self, context: Any, /) -> None:
        path = loading_file.get()
        if path is not None:
            frame = sys._getframe(1)
            while frame is not None:
                if frame.f_code.co_filename == path:
                    self._origin = (path, frame.f_lineno)
                    break
                frame = frame.f_back  # type: ignore[assignment]

    # -- the contract drivers implement -----------------------------------------------------------

    @property
    def bus(self) -> str | None:
        """Sensors returning the same bus (say, a serial port) are read one at a time by one owner."""
        return None

    @property
    def read_timeout(self) -> float:
        return self.timeout if self.timeout is not None else min(max(self.interval, 1.0), 30.0)

    @property
    def measurement_name(self) -> str:
        return self.measurement or type(self).driver or type(self).__name__.lower()

    @property
    def origin(self) -> str:
        """``file:line`` of the statement that created this sensor, for messages."""
        return f"{self._origin[0]}:{self._origin[1]}" if self._origin else f"sensor {self.name!r}"

    def open(self) -> None:
        """Connect to the device. Called before the first read and after a failure (with backoff)."""

    def read(self) -> Any:
        """Return a number, a mapping of fields, or readings. May be ``async def``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement read()")

    def close(self) -> None:
        """Release the device. Called after a failure and at shutdown."""

    def dashboard_fields(self) -> list[str]:
        """Numeric fields the dashboards and alerts show for this sensor, in order.

        The default: the fields ``unit`` names one by one, else those with ``limits``, else ``value``. Drivers whose
        fields are known from their options (a register map, a channel list) override it.
        """
        if isinstance(self.unit, dict) and self.unit:
            return list(self.unit)
        return list(self.limits) or ["value"]

    def unit_of(self, field_name: str) -> str:
        if isinstance(self.unit, str):
            return self.unit
        return self.unit.get(field_name, "")


@dataclass(slots=True)
class Processed:
    """What the core made of one raw read."""

    readings: list[Reading] = field(default_factory=list)
    out_of_range: int = 0
    invalid: list[str] = field(default_factory=list)


def _convert(sensor: Sensor, name: str, value: float) -> float:
    conv = sensor.conversion
    if isinstance(conv, dict):
        conv_one = conv.get(name)
        return conv_one(value) if conv_one is not None else value
    return conv(value) if conv is not None else value


def _range(sensor: Sensor, name: str) -> Range | None:
    vr = sensor.valid_range
    return vr.get(name) if isinstance(vr, dict) else vr


def _number(sensor: Sensor, name: str, value: object, out: Processed) -> tuple[float | None, bool]:
    """Convert and check one numeric field: (value or None if it is not stored, whether it is flagged)."""
    if not isinstance(value, (int, float)):
        out.invalid.append(f"field {name!r} is {type(value).__name__}, not a number")
        return None, False
    x = _convert(sensor, name, float(value))
    if not math.isfinite(x):
        out.invalid.append(f"field {name!r} is {x}")
        return None, False
    bounds = _range(sensor, name)
    flagged = bounds is not None and not bounds[0] <= x <= bounds[1]
    if flagged:
        out.out_of_range += 1
        if sensor.out_of_range == "drop":
            return None, False
    return (round(x, sensor.precision) if sensor.precision is not None else x), flagged


def process(sensor: Sensor, raw: Any, time_ns: int) -> Processed:
    """Turn what ``read`` returned into readings: convert, range-check, round, tag, group by unit."""
    out = Processed()
    base_tags = {**sensor.tags, "sensor": sensor.name}
    if isinstance(raw, Reading):
        raw = [raw]
    if isinstance(raw, list) and all(isinstance(r, Reading) for r in raw):
        for r in raw:
            r.tags = {**base_tags, "unit": sensor.unit_of(next(iter(r.fields), "")), **r.tags}
        out.readings = raw
        return out
    if isinstance(raw, (bool, int, float)):
        raw = {"value": raw}
    if not isinstance(raw, Mapping):
        out.invalid.append(f"read() returned {type(raw).__name__}, expected a number or a mapping of fields")
        return out

    by_unit: dict[str, dict[str, FieldValue]] = {}
    flagged_units: set[str] = set()
    for name, value in raw.items():
        unit = sensor.unit_of(name)
        if isinstance(value, (bool, str)):
            by_unit.setdefault(unit, {})[name] = value
            continue
        x, flagged = _number(sensor, name, value, out)
        if x is None:
            continue
        if flagged:
            flagged_units.add(unit)
        by_unit.setdefault(unit, {})[name] = x

    measurement = sensor.measurement_name
    for unit, fields in by_unit.items():
        if unit in flagged_units:
            fields["out_of_range"] = True
        out.readings.append(Reading(measurement, fields, {**base_tags, "unit": unit}, time_ns))
    return out
