"""Simulated sensors: signals for demos, tests and benchmarks, with injectable faults.

Signals (``t`` is seconds since the sensor was created, on the monotonic clock):

=============  ==========================================================
constant       ``value``
sine           ``value + amplitude·sin(2πt/period)``
ramp           ``value + amplitude·frac(t/period)``
step           ``value`` for half a period, ``value + amplitude`` the other half
random_walk    ``value`` plus a Gaussian step of ``amplitude`` per read
=============  ==========================================================

Faults, applied from read number ``fault_after`` on, every ``fault_every`` reads: ``raise`` (SensorError),
``hang`` (never returns), ``nan``, ``out_of_range`` (``1e9``), ``garbage`` (a string where a number belongs).
``Simulated`` is an async driver; ``SimulatedBlocking`` is the same as a blocking driver run in a thread.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import ClassVar, Literal

from pydantic import Field, PrivateAttr

from fieldstation.sensor import Sensor, SensorError

Signal = Literal["constant", "sine", "ramp", "step", "random_walk"]
Fault = Literal["none", "raise", "hang", "nan", "out_of_range", "garbage"]

HANG_SECONDS = 24 * 3600.0


class Simulated(Sensor):
    """A simulated sensor (async driver)."""

    driver: ClassVar[str] = "simulated"

    signal: Signal = Field("sine", description="Waveform: constant, sine, ramp, step or random_walk.")
    value: float | dict[str, float] = Field(
        20.0, description="Base value (the constant, the sine's centre, the walk's start), or one per field."
    )
    amplitude: float = Field(1.0, description="Amplitude of the sine, ramp and step; step size of the walk.")
    period: float = Field(60.0, gt=0, description="Period of sine, ramp and step, in seconds.")
    fields: list[str] = Field(
        default_factory=lambda: ["value"], min_length=1, description="Field names; >1 for a multi-value device."
    )
    seed: int | None = Field(None, description="Random seed of the walk, for repeatable runs.")
    fault: Fault = Field("none", description="Injected fault: raise, hang, nan, out_of_range or garbage.")
    fault_after: int = Field(0, ge=0, description="Good reads before faults start.")
    fault_every: int = Field(1, ge=1, description="Fault on every n-th read once faults have started.")

    _t0: float = PrivateAttr(default_factory=time.monotonic)
    _n: int = PrivateAttr(default=0)
    _walk: dict[str, float] = PrivateAttr(default_factory=dict)
    _rng: random.Random = PrivateAttr(default_factory=random.Random)

    def model_post_init(self, context: object, /) -> None:
        super().model_post_init(context)
        self._rng = random.Random(self.seed)

    def _signal(self, field_name: str) -> float:
        base = self.value.get(field_name, 0.0) if isinstance(self.value, dict) else self.value
        t = time.monotonic() - self._t0
        if self.signal == "constant":
            return base
        if self.signal == "sine":
            return base + self.amplitude * math.sin(2 * math.pi * t / self.period)
        if self.signal == "ramp":
            return base + self.amplitude * ((t / self.period) % 1.0)
        if self.signal == "step":
            return base + (self.amplitude if (t / self.period) % 1.0 >= 0.5 else 0.0)
        walk = self._walk.get(field_name, base) + self._rng.gauss(0.0, self.amplitude)
        self._walk[field_name] = walk
        return walk

    def _faulty(self) -> Fault:
        n = self._n
        self._n += 1
        if self.fault == "none" or n < self.fault_after or (n - self.fault_after) % self.fault_every:
            return "none"
        return self.fault

    def _sample(self, fault: Fault) -> dict[str, object]:
        if fault == "raise":
            raise SensorError("simulated failure")
        out: dict[str, object] = {}
        for name in self.fields:
            if fault == "nan":
                out[name] = math.nan
            elif fault == "out_of_range":
                out[name] = 1e9
            elif fault == "garbage":
                out[name] = None
            else:
                out[name] = self._signal(name)
        return out

    async def read(self) -> dict[str, object]:
        fault = self._faulty()
        if fault == "hang":
            await asyncio.sleep(HANG_SECONDS)
        return self._sample(fault)


class SimulatedBlocking(Simulated):
    """The simulated sensor as a blocking driver: runs in a worker thread, hangs with ``time.sleep``."""

    def read(self) -> dict[str, object]:  # type: ignore[override]
        fault = self._faulty()
        if fault == "hang":
            time.sleep(HANG_SECONDS)
        return self._sample(fault)
