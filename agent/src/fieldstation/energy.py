"""Energy and cost from the meters' counters, by tariff period: the ``energy`` measurement.

For every reading of an energy counter (a field named in ``counters``, in kWh), the agent writes the energy since the
previous reading of that counter, and its cost at the price of the tariff period the reading falls in::

    energy,sensor=mains_meter,counter=active_energy,tariff=peak,unit=kWh kwh=0.0125,cost=0.0031 <time>

Summing ``kwh`` and ``cost`` over any window gives the energy and cost of that window, split by ``tariff``:
InfluxQL 1.x cannot pick hours of the day, so the split has to happen when the data is written. Counter values
survive restarts (the live state file) and clean reboots (``energy_file``), so the energy used while the agent was
down is counted at its first reading after the restart; after a power cut they are re-based (agent.py says why).
A counter that goes backwards (a replaced or reset meter) is re-based, not counted.

The tariff table lives in the inventory, which renders it into ``agent.toml``'s ``[energy]`` section.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fieldstation.reading import Reading

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MEASUREMENT = "energy"


def _clock(v: str) -> dt.time:
    try:
        hh, mm = v.split(":")
        return dt.time(int(hh) % 24, int(mm)) if v != "24:00" else dt.time(0, 0)
    except ValueError:
        raise ValueError(f"{v!r} is not a time of day like 07:00") from None


class Period(BaseModel):
    """A tariff period: from ``start`` to ``end`` (local time) on ``days``, at ``price`` per kWh."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="Tag value, e.g. peak.")
    start: str = Field(description="Local time the period starts, 07:00.")
    end: str = Field(description="Local time it ends, 22:00; an end before the start runs past midnight.")
    days: list[Day] = Field(default_factory=lambda: list(DAYS), min_length=1)
    price: float = Field(ge=0, description="Price per kWh, in the tariff's currency.")

    @field_validator("start", "end")
    @classmethod
    def _is_clock(cls, v: str) -> str:
        _clock(v)
        return v

    def covers(self, local: dt.datetime) -> bool:
        start, end, t = _clock(self.start), _clock(self.end), local.time()
        day = DAYS[local.weekday()]
        if start < end:
            return day in self.days and start <= t < end
        # Past midnight: the part after midnight belongs to the previous day's period.
        yesterday = DAYS[(local.weekday() - 1) % 7]
        return (day in self.days and t >= start) or (yesterday in self.days and t < end)


class EnergySettings(BaseModel):
    """``[energy]`` in agent.toml: which counters to account and the tariff table."""

    model_config = ConfigDict(extra="forbid")

    counters: list[str] = Field(
        default_factory=lambda: ["active_energy"], description="Fields (kWh counters) whose increments are written."
    )
    timezone: str = Field("UTC", description="Time zone of the tariff's clock times, e.g. Europe/Paris.")
    currency: str = Field("EUR", description="Shown on the dashboards.")
    default_name: str = Field("standard", pattern=r"^[A-Za-z0-9_-]+$", description="Tariff outside every period.")
    default_price: float = Field(0.0, ge=0, description="Price per kWh outside every period.")
    periods: list[Period] = Field(default_factory=list, description="First match wins.")

    @field_validator("timezone")
    @classmethod
    def _zone_exists(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    @model_validator(mode="after")
    def _names_unique(self) -> EnergySettings:
        names = [p.name for p in self.periods]
        if len(set(names)) != len(names) or self.default_name in names:
            raise ValueError("tariff period names must be unique and differ from default_name")
        return self

    def tariff_at(self, time_ns: int) -> tuple[str, float]:
        """(tariff name, price per kWh) at an instant."""
        local = dt.datetime.fromtimestamp(time_ns / 1e9, ZoneInfo(self.timezone))
        for p in self.periods:
            if p.covers(local):
                return p.name, p.price
        return self.default_name, self.default_price


class EnergyAccounting:
    """Turns counter readings into ``energy`` readings; ``last`` is what the state file keeps across restarts."""

    def __init__(self, settings: EnergySettings, last: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.counters = frozenset(settings.counters)
        #: "sensor/field" → last counter value (kWh).
        self.last: dict[str, float] = {k: float(v) for k, v in (last or {}).items() if isinstance(v, (int, float))}

    def readings(self, readings: list[Reading]) -> list[Reading]:
        out: list[Reading] = []
        if not self.counters:  # most stations: nothing to look at in every reading
            return out
        for r in readings:
            if r.tags.get("unit") != "kWh":
                continue
            for name, value in r.fields.items():
                if name not in self.counters or isinstance(value, (bool, str)):
                    continue
                sensor = r.tags.get("sensor", "")
                key = f"{sensor}/{name}"
                previous = self.last.get(key)
                self.last[key] = float(value)
                if previous is None or value < previous:
                    continue  # the first reading, or a replaced meter: a new base, no energy
                tariff, price = self.settings.tariff_at(r.time_ns)
                kwh = float(value) - previous
                tags = {"sensor": sensor, "counter": name, "tariff": tariff, "unit": "kWh"}
                out.append(Reading(MEASUREMENT, {"kwh": kwh, "cost": kwh * price}, tags, r.time_ns))
        return out
