"""Fixture: a fake Arduino board speaking the fieldstation_analog protocol on a free loopback port.

It answers like agent/arduino/fieldstation_analog: every byte received gets one 24-byte frame of the 12 values
in ``values``. ``mode`` makes it misbehave: ``chunked`` (the frame in 1-byte and odd-sized pieces, with small
delays), ``short`` (``short_bytes`` of the frame, then it closes), ``silent`` (reads, never answers).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fieldstation.simulators import ArduinoSimulator


@pytest.fixture
def arduino_board() -> Iterator[ArduinoSimulator]:
    """A fake fieldstation_analog board at 127.0.0.1:<free port>; set ``values`` and ``mode`` as needed."""
    board = ArduinoSimulator()
    board.start()
    try:
        yield board
    finally:
        board.stop()
