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
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pydantic import Field, PrivateAttr

from fieldstation.sensor import Sensor, SensorError

Signal = Literal["constant", "sine", "ramp", "step", "random_walk"]
Fault = Literal["none", "raise", "hang", "nan", "out_of_range", "garbage"]

HANG_SECONDS = 24 * 3600.0


@dataclass
class _RunState:
    t0: float = field(default_factory=time.monotonic)
    n: int = 0
    walk: dict[str, float] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)


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

    # One private attribute holding the run state: pydantic serves each private attribute through
    # __getattr__, which costs more per read than everything else the simulator does.
    _run: _RunState = PrivateAttr(default_factory=_RunState)

    def model_post_init(self, context: object, /) -> None:
        super().model_post_init(context)
        self._run.rng = random.Random(self.seed)

    def dashboard_fields(self) -> list[str]:
        return list(self.fields)

    def _signal(self, field_name: str, run: _RunState) -> float:
        base = self.value.get(field_name, 0.0) if isinstance(self.value, dict) else self.value
        t = time.monotonic() - run.t0
        if self.signal == "constant":
            return base
        if self.signal == "sine":
            return base + self.amplitude * math.sin(2 * math.pi * t / self.period)
        if self.signal == "ramp":
            return base + self.amplitude * ((t / self.period) % 1.0)
        if self.signal == "step":
            return base + (self.amplitude if (t / self.period) % 1.0 >= 0.5 else 0.0)
        walk = run.walk.get(field_name, base) + run.rng.gauss(0.0, self.amplitude)
        run.walk[field_name] = walk
        return walk

    def _faulty(self, run: _RunState) -> Fault:
        n = run.n
        run.n += 1
        if self.fault == "none" or n < self.fault_after or (n - self.fault_after) % self.fault_every:
            return "none"
        return self.fault

    def _sample(self, fault: Fault, run: _RunState) -> dict[str, object]:
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
                out[name] = self._signal(name, run)
        return out

    async def read(self) -> dict[str, object]:
        run = self._run
        if self.fault == "none":  # the benchmarks' sensor: no more work than the signal itself
            run.n += 1
            return {name: self._signal(name, run) for name in self.fields}
        fault = self._faulty(run)
        if fault == "hang":
            await asyncio.sleep(HANG_SECONDS)
        return self._sample(fault, run)


class SimulatedBlocking(Simulated):
    """The simulated sensor as a blocking driver: runs in a worker thread, hangs with ``time.sleep``."""

    def read(self) -> dict[str, object]:  # type: ignore[override]
        run = self._run
        fault = self._faulty(run)
        if fault == "hang":
            time.sleep(HANG_SECONDS)
        return self._sample(fault, run)
