"""Fieldstation: the acquisition agent of a Raspberry Pi monitoring station."""

from fieldstation.conversion import Linear, Polynomial, PowerOfTen
from fieldstation.reading import Reading
from fieldstation.sensor import Sensor, SensorError

__version__ = "0.1.0"

__all__ = ["Linear", "Polynomial", "PowerOfTen", "Reading", "Sensor", "SensorError", "__version__"]
