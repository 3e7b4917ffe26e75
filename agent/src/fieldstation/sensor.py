"""The Sensor contract.

A sensor is a typed, validated description of one device plus three methods: ``open``, ``read`` and
``close``. ``read`` returns raw values; the core turns them into readings (conversion, range check,
precision, tags), schedules the calls, buffers and writes. Drivers never talk to the database.

``read`` may return:

- a number: stored as the field ``value``;
- a mapping of field name to number, bool or string: one device, many fields;
- a :class:`~fieldstation.reading.Reading` or a list of them, for drivers that need full control.

Whatever it returns is checked against the limits of :mod:`fieldstation.reading` (field names, finite values,
bounded strings, fields and text per read) by :func:`process`: a bad field is dropped and the rest kept, a read over
a whole-read limit is refused; the scheduler counts either as an error of the sensor.

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

import difflib
import importlib
import inspect
import itertools
import math
import sys
from collections.abc import Collection, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from fieldstation.conversion import Conversion
from fieldstation.reading import (
    INT64,
    MAX_FIELDS,
    MAX_TEXT_BYTES,
    FieldValue,
    Reading,
    name_problem,
    short,
    text_problem,
)

#: Set by the config loader to the path of the config file being executed, so sensors can record the
#: line that created them (for one-line error messages).
loading_file: ContextVar[str | None] = ContextVar("loading_file", default=None)

MIN_INTERVAL = 0.1
#: Longest interval and read timeout, in seconds: anything longer is a typo (``inf`` would read once, never again).
MAX_INTERVAL = 86_400.0
MAX_TIMEOUT = 3_600.0
#: The options whose mapping form is keyed by field name: each key must name a field the sensor produces.
PER_FIELD_OPTIONS = ("unit", "limits", "valid_range", "conversion")

#: Where a sensor was created in config.py: (line, (line, end line, column, end column) of the call, if known).
CallSite = tuple[int, tuple[int, int, int, int] | None]


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


@dataclass(slots=True)
class Failure:
    """A sensor that could not be created while config.py was loading."""

    cls: type[Sensor]
    exc: Exception
    site: CallSite | None
    sensor: Sensor  # its unvalidated stand-in


#: Set by the config loader while config.py runs: a sensor that fails validation is recorded here instead of
#: raising, and stands in unvalidated, so that one run of ``check`` reports every mistake.
failures: ContextVar[list[Failure] | None] = ContextVar("failures", default=None)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'interval'?)`` for a near miss, else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _call_site() -> CallSite | None:
    """The innermost frame of the config file being loaded: its line and the position of the call in it."""
    path = loading_file.get()
    if path is None:
        return None
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename == path:
            pos = next(iter(list(frame.f_code.co_positions())[frame.f_lasti // 2 :]), None)
            exact = pos if pos is not None and None not in pos else None
            return frame.f_lineno, exact  # type: ignore[return-value]
        frame = frame.f_back  # type: ignore[assignment]
    return None


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
    interval: float = Field(10.0, description="Seconds between reads, 0.1 to 86400.")
    timeout: float | None = Field(
        None, description="Seconds a read may take (at most 3600); default min(max(interval, 1), 30)."
    )
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
    _site: CallSite | None = PrivateAttr(default=None)
    #: True for the unvalidated stand-in of a sensor whose options were wrong (see :data:`failures`).
    _invalid: bool = PrivateAttr(default=False)

    def __init__(self, /, **data: Any) -> None:
        site = _call_site()
        collected = failures.get()
        if collected is None:
            super().__init__(**data)
        else:
            try:
                super().__init__(**data)
            except (ValidationError, MissingExtra) as exc:
                collected.append(Failure(type(self), exc, site, self))
                self._stand_in(data)
        if site is not None:
            path = loading_file.get()
            assert path is not None
            self._origin = (path, site[0])
            self._site = site

    if not TYPE_CHECKING:  # as in pydantic: a __getattr__ mypy sees would allow any attribute

        def __getattr__(self, item: str) -> Any:
            """Private attributes straight from their dict. Pydantic's own ``__getattr__`` first asks each one
            whether it is a descriptor, which raises and catches an AttributeError: 1.7 µs a read of a driver
            keeping its state in one (none of ours has a descriptor as its default)."""
            try:
                return object.__getattribute__(self, "__pydantic_private__")[item]
            except (AttributeError, KeyError, TypeError):
                return super().__getattr__(item)

    def _stand_in(self, data: dict[str, Any]) -> None:
        """Become an unvalidated placeholder, so config.py runs on and its other mistakes are found too."""
        cls: type[BaseModel] = type(self)
        known = {k: v for k, v in data.items() if k in cls.model_fields}
        try:
            made = cls.model_construct(**known)
        except Exception:  # a driver's post-init choking on bad options: a bare placeholder is enough
            made = cls.model_construct()
        for attr in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__"):
            object.__setattr__(self, attr, getattr(made, attr))
        self._invalid = True

    # -- validation ---------------------------------------------------------------------------------

    @field_validator("interval")
    @classmethod
    def _interval_bounded(cls, v: float) -> float:
        if not v >= MIN_INTERVAL:
            raise ValueError(f"interval must be at least {MIN_INTERVAL} s (got {v:g})")
        if not v <= MAX_INTERVAL:
            raise ValueError(f"interval must be at most {MAX_INTERVAL:g} s, a day (got {v:g})")
        return v

    @field_validator("timeout")
    @classmethod
    def _timeout_bounded(cls, v: float | None) -> float | None:
        if v is not None and not 0 < v <= MAX_TIMEOUT:
            raise ValueError(f"timeout must be above 0 and at most {MAX_TIMEOUT:g} s (got {v:g})")
        return v

    @field_validator("valid_range")
    @classmethod
    def _range_ordered(cls, v: Range | dict[str, Range] | None) -> Range | dict[str, Range] | None:
        ranges = v.values() if isinstance(v, dict) else [v] if v is not None else []
        for lo, hi in ranges:
            if not lo < hi:
                raise ValueError(f"valid_range low must be below high (got {lo:g}, {hi:g})")
        return v

    @field_validator("limits")
    @classmethod
    def _limits_ordered(cls, v: dict[str, Range]) -> dict[str, Range]:
        for name, (lo, hi) in v.items():
            if not lo < hi:
                raise ValueError(f"limits of {name!r}: low must be below high (got {lo:g}, {hi:g})")
        return v

    @model_validator(mode="after")
    def _extras_installed(self) -> Sensor:
        for module in type(self).requires:
            try:
                importlib.import_module(module)
            except ImportError:
                raise MissingExtra(type(self).driver or type(self).__name__.lower(), module) from None
        return self

    # -- what check verifies beyond the options' types ---------------------------------------------

    @classmethod
    def read_problem(cls) -> str | None:
        """Why the scheduler could not call ``read()`` of this class, or None."""
        read = cls.read
        if read is Sensor.read:
            return f"{cls.__name__} has no read() method: define def read(self) returning a number or fields"
        if not callable(read):
            return f"{cls.__name__}.read is a {type(read).__name__}, not a method"
        try:
            inspect.signature(read).bind(None)
        except TypeError:
            return f"{cls.__name__}.read{inspect.signature(read)} must take only self: the scheduler calls read()"
        except ValueError:  # no signature to inspect (a builtin): trust it
            pass
        return None

    def field_problems(self, skip: Collection[str | None] = ()) -> list[tuple[str, str, str]]:
        """(option, key, problem) for each per-field key the user wrote that names no field of this sensor.

        The fields are those the driver declares (:meth:`declared_fields`); for a sensor declaring none, those
        its ``unit`` mapping names (the dashboards show exactly those).
        """
        known = self.declared_fields() or None  # none declared (or an unvalidated stand-in's empty plan): unknown
        source = f"{type(self).__name__} produces"
        options: tuple[str, ...] = PER_FIELD_OPTIONS
        if known is None:
            # Without a declaration, the base dashboards show the fields `unit` names: a limit on another field
            # would have no panel. Drivers with their own dashboard fields and no declaration are not checked.
            keyed_by_unit = type(self).dashboard_fields is Sensor.dashboard_fields and "unit" in self.model_fields_set
            if not (keyed_by_unit and isinstance(self.unit, dict) and self.unit):
                return []
            known, source, options = list(self.unit), "`unit` names", PER_FIELD_OPTIONS[1:]
        out = []
        for option in options:
            value = getattr(self, option)
            if option in skip or option not in self.model_fields_set or not isinstance(value, dict):
                continue
            for key in value:
                if key not in known:
                    out.append(
                        (
                            option,
                            key,
                            f"{option} names the field {key!r}, which is not among the fields {source} "
                            f"({', '.join(known)}){did_you_mean(key, known)}",
                        )
                    )
        return out

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

    def declared_fields(self) -> list[str] | None:
        """The fields ``read()`` returns, if known from the class or its options; None if not known.

        A sensor class declares them with ``fields``: a class attribute
        (``fields: ClassVar[tuple[str, ...]] = ("temperature", "humidity")``) or an option (a list of names, or a
        mapping keyed by them). ``check`` verifies the per-field options against them and ``once`` warns when a
        read returns others. Drivers whose fields follow from other options override this.
        """
        declared = getattr(self, "fields", None)
        if isinstance(declared, (list, tuple, dict, set, frozenset)) and all(isinstance(f, str) for f in declared):
            return list(declared)
        return None

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
    invalid: list[str] = field(default_factory=list)  # one entry per field dropped, or one for a read refused

    def summary(self) -> str:
        """The problems as one log line: the first, and how many more."""
        more = len(self.invalid) - 1
        return self.invalid[0] + (f" (and {more} more field{'s' if more > 1 else ''})" if more > 0 else "")


#: Field names a plan remembers as checked; a driver inventing names on every read gets them checked each time.
MAX_CHECKED_NAMES = 4096


class Plan:
    """What :func:`process` needs of a sensor's options, taken once: the measurement, the tags per unit, how
    numbers are converted and checked, and the field names already found valid. The scheduler keeps one per
    sensor; options changed afterwards are not seen (config.py sets them before the agent starts)."""

    __slots__ = ("_base_tags", "_tags", "checked", "conversion", "drop", "measurement", "plain", "precision", "unit",
                 "unit_of", "valid_range")

    def __init__(self, sensor: Sensor) -> None:
        self.measurement = sensor.measurement_name
        self.unit = sensor.unit
        # A driver's own unit_of (units from a table, or learnt from payloads) is asked every time.
        self.unit_of = sensor.unit_of if type(sensor).unit_of is not Sensor.unit_of else None
        self.conversion = sensor.conversion
        self.valid_range = sensor.valid_range
        self.precision = sensor.precision
        self.drop = sensor.out_of_range == "drop"
        #: A finite float is stored as it is: no conversion, no range, no rounding.
        self.plain = self.conversion is None and self.valid_range is None and self.precision is None
        self.checked: set[str] = set()
        self._base_tags = {**sensor.tags, "sensor": sensor.name}
        self._tags: dict[str, dict[str, str]] = {}

    def unit_for(self, name: str) -> str:
        if self.unit_of is not None:
            return self.unit_of(name)
        unit = self.unit
        return unit if isinstance(unit, str) else unit.get(name, "")

    def tags_for(self, unit: str) -> dict[str, str]:
        """The tags of a reading in ``unit``: a dict of its own (a driver may add to it)."""
        tags = self._tags.get(unit)
        if tags is None:
            tags = {**self._base_tags, "unit": unit}
            if len(self._tags) < MAX_CHECKED_NAMES:
                self._tags[unit] = tags
        return tags.copy()

    def convert(self, name: str, value: float) -> float:
        conv = self.conversion
        if isinstance(conv, dict):
            conv_one = conv.get(name)
            return conv_one(value) if conv_one is not None else value
        return conv(value) if conv is not None else value

    def range_of(self, name: str) -> Range | None:
        vr = self.valid_range
        return vr.get(name) if isinstance(vr, dict) else vr


def _number(plan: Plan, name: str, value: object, out: Processed) -> tuple[float | None, bool]:
    """Convert and check one numeric field: (value or None if it is not stored, whether it is flagged)."""
    if not isinstance(value, (int, float)):
        out.invalid.append(f"field {name!r} is {type(value).__name__}, not a number")
        return None, False
    try:
        x = plan.convert(name, float(value))
    except OverflowError:  # an int beyond a float (10**400), or a conversion overflowing
        out.invalid.append(f"field {name!r} is {short(value)}, beyond a float")
        return None, False
    if not math.isfinite(x):
        out.invalid.append(f"field {name!r} is {x}")
        return None, False
    bounds = plan.range_of(name)
    flagged = bounds is not None and not bounds[0] <= x <= bounds[1]
    if flagged:
        out.out_of_range += 1
        if plan.drop:
            return None, False
    return (round(x, plan.precision) if plan.precision is not None else x), flagged


class _Refused(Exception):
    """A read over a whole-read limit (reading.py): refused as a whole."""


class _Text:
    """The string bytes of one read so far, against MAX_TEXT_BYTES."""

    def __init__(self) -> None:
        self.size = 0

    def check(self, name: str, value: str, out: Processed) -> bool:
        problem, size = text_problem(name, value)
        if problem is not None:
            out.invalid.append(problem)
            return False
        self.size += size
        if self.size > MAX_TEXT_BYTES:
            raise _Refused(f"read() returned over {MAX_TEXT_BYTES} bytes of text, the limit per read")
        return True


def _value_problem(name: str, value: object) -> str | None:
    """Why a value a driver put in its own Reading cannot be stored as it is (strings aside), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        ok = INT64[0] <= value <= INT64[1]
        return None if ok else f"field {name!r} is {short(value)}, beyond a 64-bit integer"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"field {name!r} is {value}"
    return f"field {name!r} is {type(value).__name__}, not a number, bool or string"


def _stored(name: object, value: object, out: Processed, text: _Text) -> bool:
    """Whether a field a driver made itself (a Reading) can be stored as it is; if not, why is in ``out``."""
    problem = name_problem(name)
    if problem is None:
        assert isinstance(name, str)
        if isinstance(value, str):
            return text.check(name, value, out)
        problem = _value_problem(name, value)
    if problem is not None:
        out.invalid.append(problem)
    return problem is None


def _checked_readings(readings: list[Reading], out: Processed) -> list[Reading]:
    """A driver's own readings, each field checked like any other; a reading left with no field is dropped."""
    if sum(len(r.fields) for r in readings) > MAX_FIELDS:
        raise _Refused(f"read() returned more than {MAX_FIELDS} fields, the limit per read")
    text = _Text()
    kept = []
    for r in readings:
        r.fields = {k: v for k, v in r.fields.items() if _stored(k, v, out, text)}
        if r.fields:
            kept.append(r)
    return kept


def process(sensor: Sensor, raw: Any, time_ns: int, plan: Plan | None = None) -> Processed:
    """Turn what ``read`` returned into readings: validate, convert, range-check, round, tag, group by unit.

    ``plan`` is the sensor's :class:`Plan`, if the caller keeps one (the scheduler does); else one is made.
    Bounded work: a read over a limit of reading.py is refused before its fields are looked at.
    """
    out = Processed()
    try:
        _process(plan or Plan(sensor), raw, time_ns, out)
    except _Refused as exc:
        out.readings = []
        out.invalid = [str(exc)]
    return out


def _process(plan: Plan, raw: Any, time_ns: int, out: Processed) -> None:
    if raw.__class__ is dict:  # the common case: a mapping of fields
        items: Iterable[tuple[Any, Any]] = raw.items()
        count = len(raw)
    else:
        if isinstance(raw, Reading):
            raw = [raw]
        if isinstance(raw, list) and len(raw) > MAX_FIELDS:  # before its items are looked at
            raise _Refused(f"read() returned {len(raw)} readings, more than the limit of {MAX_FIELDS} fields per read")
        if isinstance(raw, list) and all(isinstance(r, Reading) for r in raw):
            _from_readings(plan, raw, out)
            return
        if isinstance(raw, (bool, int, float)):
            raw = {"value": raw}
        if not isinstance(raw, Mapping):
            out.invalid.append(f"read() returned {type(raw).__name__}, expected a number or a mapping of fields")
            return
        if len(raw) > MAX_FIELDS:
            raise _Refused(f"read() returned {len(raw)} fields, more than the limit of {MAX_FIELDS} per read")
        items = list(itertools.islice(raw.items(), MAX_FIELDS + 1))  # a mapping's len() may understate
        if len(items) > MAX_FIELDS:
            raise _Refused(f"read() returned more than {MAX_FIELDS} fields, the limit per read")
        count = len(items)
    if not count:
        out.invalid.append("read() returned no fields")
    elif count > MAX_FIELDS:
        raise _Refused(f"read() returned {count} fields, more than the limit of {MAX_FIELDS} per read")
    else:
        _from_items(plan, items, time_ns, out)


def _from_readings(plan: Plan, raw: list[Reading], out: Processed) -> None:
    """A driver's own readings: tagged like the core's (its own tags win), each field checked."""
    for r in raw:
        r.tags = {**plan.tags_for(plan.unit_for(next(iter(r.fields), ""))), **r.tags}
    out.readings = _checked_readings(raw, out)
    if not out.readings and not out.invalid:
        out.invalid.append("read() returned no fields")


def _name_checked(checked: set[str], name: object, out: Processed) -> bool:
    """Whether ``name`` can be a field name (remembered if so); if not, why is in ``out``."""
    problem = name_problem(name)
    if problem is not None:
        out.invalid.append(problem)
        return False
    if name.__class__ is str and len(checked) < MAX_CHECKED_NAMES:
        checked.add(name)
    return True


def _from_items(plan: Plan, items: Iterable[tuple[Any, Any]], time_ns: int, out: Processed) -> None:
    """Fields by unit, each checked: a reading per unit. The loop runs once per field of every read, so the
    common case (a known name, a finite float, nothing to convert) is tried first and costs a few comparisons."""
    by_unit: dict[str, dict[str, FieldValue]] = {}
    flagged_units: set[str] = set()
    text: _Text | None = None
    checked, plain = plan.checked, plan.plain
    for name, value in items:
        if (name.__class__ is not str or name not in checked) and not _name_checked(checked, name, out):
            continue
        unit = plan.unit_for(name)
        stored: FieldValue = value
        if plain and value.__class__ is float and value - value == 0.0:
            pass  # a finite float, stored as it is
        elif isinstance(value, str):
            text = text or _Text()
            if not text.check(name, value, out):
                continue
        elif not isinstance(value, bool):
            x, flagged = _number(plan, name, value, out)
            if x is None:
                continue
            if flagged:
                flagged_units.add(unit)
            stored = x
        fields = by_unit.get(unit)
        if fields is None:
            by_unit[unit] = {name: stored}
        else:
            fields[name] = stored

    measurement = plan.measurement
    for unit, fields in by_unit.items():
        if unit in flagged_units:
            fields["out_of_range"] = True
        out.readings.append(Reading(measurement, fields, plan.tags_for(unit), time_ns))
