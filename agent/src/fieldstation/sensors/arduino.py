"""Analog inputs of an Arduino (the lab's Due) over TCP: one request byte in, one 24-byte frame out.

Protocol (the sketch is ``agent/arduino/fieldstation_analog/``): the client connects to ``host:port`` and
sends one byte; the board answers with :data:`CHANNELS` ADC values of 2 bytes each, channel 0 (A0) first,
high byte first by default. With the Due's 12-bit ADC a value is ``0..4095`` and volts = ``raw / 4096 · vref``.
A value above ``2**bits - 1`` cannot come from the ADC, so the frame is corrupt and the read fails.

TCP is a byte stream: a frame may arrive in any number of pieces, so the driver reads until it has all
24 bytes or its deadline passes (the code this replaces assumed one byte per ``recv``).
"""

from __future__ import annotations

import socket
import time
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from fieldstation.sensor import Sensor, SensorError

#: Channels in every frame: the Due's A0..A11.
CHANNELS = 12
#: Bytes per channel in a frame.
BYTES_PER_CHANNEL = 2
FRAME_SIZE = CHANNELS * BYTES_PER_CHANNEL
DEFAULT_PORT = 5000

ByteOrder = Literal["big", "little"]


def _default_channels() -> dict[int, str]:
    return {ch: f"ain{ch}" for ch in range(CHANNELS)}


def decode_frame(frame: bytes, byte_order: ByteOrder = "big", bits: int = 12) -> list[int]:
    """The raw ADC value of each channel in a frame; ``ValueError`` if the frame is short or corrupt."""
    if len(frame) != FRAME_SIZE:
        raise ValueError(f"frame of {len(frame)} bytes, expected {FRAME_SIZE}")
    raws = [
        int.from_bytes(frame[i : i + BYTES_PER_CHANNEL], byte_order) for i in range(0, FRAME_SIZE, BYTES_PER_CHANNEL)
    ]
    top = (1 << bits) - 1
    bad = [f"A{ch}={raw}" for ch, raw in enumerate(raws) if raw > top]
    if bad:
        raise ValueError(f"corrupt frame: {', '.join(bad)} above the {bits}-bit maximum {top} ({frame.hex()})")
    return raws


def to_volts(raw: int, vref: float, bits: int) -> float:
    """raw / 2^bits · vref: the voltage at the input, with the ADC's reference voltage ``vref``."""
    return raw / (1 << bits) * vref


def decode(
    frame: bytes, channels: dict[int, str], *, byte_order: ByteOrder = "big", vref: float = 3.25, bits: int = 12
) -> dict[str, float]:
    """A frame → ``{field: volts}`` for the channels asked for, in the order of ``channels``."""
    raws = decode_frame(frame, byte_order, bits)
    return {name: to_volts(raws[ch], vref, bits) for ch, name in channels.items()}


class Arduino(Sensor):
    """Some or all of the 12 analog inputs of an Arduino running the fieldstation_analog sketch."""

    driver: ClassVar[str] = "arduino"

    host: str = Field(description="The board's address.")
    port: int = Field(DEFAULT_PORT, ge=1, le=65535, description="The sketch's TCP port.")
    request: int = Field(1, ge=0, le=255, description="The byte sent to ask for a frame.")
    channels: dict[int, str] = Field(
        default_factory=_default_channels,
        description="Channel (0 = A0 … 11 = A11) → field name; only these are stored.",
    )
    byte_order: ByteOrder = Field("big", description="Order of the 2 bytes of each value: big = high byte first.")
    vref: float = Field(3.25, gt=0, description="The ADC's reference voltage, as measured on the board.")
    bits: int = Field(12, ge=1, le=16, description="ADC resolution (the sketch's analogReadResolution).")
    unit: str | dict[str, str] = Field("V", description="Unit of every field, or one per field name.")

    @field_validator("channels")
    @classmethod
    def _channels_valid(cls, v: dict[int, str]) -> dict[int, str]:
        if not v:
            raise ValueError("channels must name at least one channel")
        wrong = sorted(ch for ch in v if not 0 <= ch < CHANNELS)
        if wrong:
            raise ValueError(f"channels must be 0 to {CHANNELS - 1} (A0 to A{CHANNELS - 1}), got {wrong}")
        names = list(v.values())
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"field names must be unique, {twice} used twice")
        return v

    def declared_fields(self) -> list[str]:
        return list(self.channels.values())

    def dashboard_fields(self) -> list[str]:
        return list(self.channels.values())

    @property
    def bus(self) -> str:
        # The sketch serves one request at a time; sensors sharing a board are read one after another.
        return f"tcp://{self.host}:{self.port}"

    @property
    def _where(self) -> str:
        return f"arduino {self.host}:{self.port}"

    def _io_timeout(self) -> float:
        # Below the scheduler's read timeout, so a silent board is reported as such, not as a hung read.
        return min(0.8 * self.read_timeout, 5.0)

    def fetch_frame(self) -> bytes:
        """Connect, send the request byte, and read exactly one frame before a deadline."""
        budget = self._io_timeout()
        deadline = time.monotonic() + budget
        try:
            sock = socket.create_connection((self.host, self.port), timeout=budget)
        except OSError as exc:
            raise SensorError(f"{self._where}: cannot connect: {exc}") from None
        frame = bytearray()
        with sock:
            try:
                sock.sendall(bytes([self.request]))
                while len(frame) < FRAME_SIZE:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    sock.settimeout(left)
                    chunk = sock.recv(FRAME_SIZE - len(frame))
                    if not chunk:
                        raise SensorError(f"{self._where}: connection closed after {len(frame)} of {FRAME_SIZE} bytes")
                    frame += chunk
            except TimeoutError:
                raise SensorError(
                    f"{self._where}: no complete frame within {budget:g} s ({len(frame)} of {FRAME_SIZE} bytes)"
                ) from None
            except OSError as exc:
                raise SensorError(f"{self._where}: {exc} after {len(frame)} of {FRAME_SIZE} bytes") from None
        return bytes(frame)

    def read(self) -> dict[str, float]:
        # A connection per read: a frame that arrives after its read timed out can never be taken for the
        # next one (the stream re-synchronises at every connect), and a board that reset heals by itself.
        # The cost is one TCP handshake per read on the local network.
        frame = self.fetch_frame()
        try:
            return decode(frame, self.channels, byte_order=self.byte_order, vref=self.vref, bits=self.bits)
        except ValueError as exc:
            raise SensorError(f"{self._where}: {exc}") from None
