"""Fieldstation: the acquisition agent of a Raspberry Pi monitoring station."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fieldstation.conversion import Linear, Polynomial, PowerOfTen
    from fieldstation.reading import Reading
    from fieldstation.sensor import Sensor, SensorError

__version__ = "0.1.0"

__all__ = ["Linear", "Polynomial", "PowerOfTen", "Reading", "Sensor", "SensorError", "__version__"]

#: The names config.py imports, and their modules: loaded on first use, because every ``fieldstation`` command
#: imports this package and the models behind these names cost ~200 ms of CPU (bench/startup_bench.py).
_LAZY = {
    "Linear": "fieldstation.conversion",
    "Polynomial": "fieldstation.conversion",
    "PowerOfTen": "fieldstation.conversion",
    "Reading": "fieldstation.reading",
    "Sensor": "fieldstation.sensor",
    "SensorError": "fieldstation.sensor",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fieldstation' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
