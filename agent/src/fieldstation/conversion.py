"""Conversions from a raw driver value to the physical quantity stored.

Each conversion is a small typed model, usable in ``config.py``::

    conversion=Linear(slope=100.0, offset=-50.0)           # y = 100·x − 50
    conversion=Polynomial(coefficients=[0.1, 2.0, 0.03])   # y = 0.1 + 2·x + 0.03·x²
    conversion=PowerOfTen(a=1.0, b=1.667, c=11.33, d=0.0)  # y = a·10^(b·x − c) + d (e.g. a Pfeiffer gauge)
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Conversion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __call__(self, x: float) -> float:
        raise NotImplementedError


class Linear(_Conversion):
    """y = slope·x + offset"""

    kind: Literal["linear"] = "linear"
    slope: float = 1.0
    offset: float = 0.0

    def __call__(self, x: float) -> float:
        return self.slope * x + self.offset


class Polynomial(_Conversion):
    """y = c0 + c1·x + c2·x² + … (coefficients in ascending order of power)"""

    kind: Literal["polynomial"] = "polynomial"
    coefficients: list[float] = Field(min_length=1)

    def __call__(self, x: float) -> float:
        y = 0.0
        for c in reversed(self.coefficients):  # Horner's scheme
            y = y * x + c
        return y


class PowerOfTen(_Conversion):
    """y = a·10^(b·x − c) + d, the calibration curve of log-output gauges."""

    kind: Literal["power_of_ten"] = "power_of_ten"
    a: float = 1.0
    b: float
    c: float = 0.0
    d: float = 0.0

    def __call__(self, x: float) -> float:
        return float(self.a * 10.0 ** (self.b * x - self.c) + self.d)


Conversion = Annotated[Linear | Polynomial | PowerOfTen, Field(discriminator="kind")]
