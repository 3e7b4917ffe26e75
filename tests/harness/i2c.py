"""A stand-in for the I²C bus object: the one piece of the i2c driver that needs hardware.

:class:`FakeBus` has exactly the :class:`smbus2.SMBus` methods the driver calls (``read_byte_data``,
``write_byte_data``, ``read_i2c_block_data``, ``write_i2c_block_data``, ``i2c_rdwr`` with smbus2's real
:class:`~smbus2.i2c_msg`, ``close``). Behind it, each chip is emulated from its datasheet's register map and timing:

- :class:`Bosch`: a BME280/BMP280 with its chip id, trimming registers, data registers at their reset value
  (0x80000: "skipped") until a forced measurement ran, the status register's ``measuring`` bit set while it runs,
  ctrl_hum latched only by a write to ctrl_meas (BME280 §5.4.3), and a value skipped when its oversampling is 0.
- :class:`Sensirion`: an SHT3x/SHT4x that answers a measure command after its measurement time, NACKs the read header
  before that (as the chips do), and NACKs unknown commands.
- :class:`Ads1115`: the config register (power-on 0x8583, OS reading 0 while converting), single-shot conversions of
  the emulated input voltages through the mux and PGA, clipped to the 16-bit range.

An address with no device NACKs (``OSError(EREMOTEIO)``, what i2c-dev raises).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import time
from dataclasses import dataclass, field

from smbus2 import i2c_msg
from smbus2.smbus2 import I2C_M_RD


def nack() -> OSError:
    return OSError(errno.EREMOTEIO, os.strerror(errno.EREMOTEIO))


class Device:
    def read(self, register: int, length: int) -> list[int]:
        raise nack()

    def write(self, register: int, data: list[int]) -> None:
        raise nack()

    def raw_write(self, data: bytes) -> None:
        raise nack()

    def raw_read(self, length: int) -> bytes:
        raise nack()


# -- BME280 / BMP280 ---------------------------------------------------------------------------------------------


def bosch_calibration_bytes(
    t: tuple[int, int, int], p: tuple[int, ...], h: tuple[int, int, int, int, int, int] | None = None
) -> dict[int, int]:
    """The trimming registers holding dig_T1..dig_P9 (and dig_H1..dig_H6), laid out as BME280 Table 16 says."""
    regs = dict(enumerate(struct.pack("<HhhHhhhhhhhh", *t, *p), start=0x88))
    if h is not None:
        h1, h2, h3, h4, h5, h6 = h
        regs[0xA1] = h1
        e1, e2 = struct.pack("<h", h2)
        regs.update(
            {
                0xE1: e1,
                0xE2: e2,
                0xE3: h3,
                0xE4: (h4 >> 4) & 0xFF,
                0xE5: ((h5 & 0x0F) << 4) | (h4 & 0x0F),
                0xE6: (h5 >> 4) & 0xFF,
                0xE7: h6 & 0xFF,
            }
        )
    return regs


def bosch_data_bytes(adc_t: int, adc_p: int, adc_h: int | None = None) -> bytes:
    """What 0xF7.. holds after a measurement: press msb/lsb/xlsb, temp msb/lsb/xlsb (20 bits), hum msb/lsb."""
    out = bytes(
        [adc_p >> 12, (adc_p >> 4) & 0xFF, (adc_p & 0xF) << 4, adc_t >> 12, (adc_t >> 4) & 0xFF, (adc_t & 0xF) << 4]
    )
    return out + (bytes([adc_h >> 8, adc_h & 0xFF]) if adc_h is not None else b"")


@dataclass
class Bosch(Device):
    chip_id: int
    calibration: dict[int, int]
    measured: bytes  # the data registers after a measurement (6 bytes on a BMP280, 8 on a BME280)
    measure_s: float = 0.008  # how long a forced measurement runs here
    nvm_s: float = 0.0  # how long after power-on the trimming registers are still being copied (they read 0)
    mode: int = 0b00  # the power mode it was left in: 0b11 is normal mode, where config writes are ignored
    regs: bytearray = field(default_factory=lambda: bytearray(256))
    measurements: int = 0
    ctrl_hum_written: int = 0  # latched into 0xF2 by the next ctrl_meas write
    _until: float = 0.0
    _pending: bytes = b""

    def __post_init__(self) -> None:
        self.regs[0xD0] = self.chip_id
        self.regs[0xF4] = self.mode
        self.regs[0xF5] = 0x1C if self.mode == 0b11 else 0x00  # what another program set: IIR filter ×16
        self.regs[0xF7 : 0xF7 + 8] = bytes([0x80, 0, 0, 0x80, 0, 0, 0x80, 0])  # reset values
        self._nvm_done = time.monotonic() + self.nvm_s

    def _settle(self) -> None:
        copying = time.monotonic() < self._nvm_done
        for reg, value in self.calibration.items():
            self.regs[reg] = 0 if copying else value
        if self._pending and time.monotonic() >= self._until:
            self.regs[0xF7 : 0xF7 + len(self._pending)] = self._pending
            self._pending = b""
            self.regs[0xF4] &= ~0b11  # back to sleep mode after a forced measurement
        self.regs[0xF3] = (0x08 if self._pending else 0x00) | (0x01 if copying else 0x00)

    def read(self, register: int, length: int) -> list[int]:
        self._settle()
        return list(self.regs[register : register + length])

    def write(self, register: int, data: list[int]) -> None:
        self._settle()
        for i, value in enumerate(data):
            reg = register + i
            if reg == 0xF2:
                self.ctrl_hum_written = value & 0b111
                continue
            if reg == 0xF5 and self.regs[0xF4] & 0b11 == 0b11:
                continue  # ignored in normal mode (BME280 §5.4.6)
            self.regs[reg] = value
            if reg == 0xF4:
                self.regs[0xF2] = self.ctrl_hum_written
                if value & 0b11 in (0b01, 0b10) and not self._pending:
                    self._start(osrs_t=value >> 5, osrs_p=(value >> 2) & 0b111, osrs_h=self.regs[0xF2])

    def _start(self, osrs_t: int, osrs_p: int, osrs_h: int) -> None:
        data = bytearray(self.measured)
        if osrs_p == 0:
            data[0:3] = bytes([0x80, 0, 0])
        if osrs_t == 0:
            data[3:6] = bytes([0x80, 0, 0])
        if len(data) == 8 and osrs_h == 0:
            data[6:8] = bytes([0x80, 0])
        self._pending = bytes(data)
        self._until = time.monotonic() + self.measure_s
        self.measurements += 1
        self.regs[0xF3] = 0x08


# -- SHT3x / SHT4x -----------------------------------------------------------------------------------------------

SENSIRION_COMMANDS = {"sht3x": bytes([0x24, 0x00]), "sht4x": bytes([0xFD])}


@dataclass
class Sensirion(Device):
    kind: str  # sht3x or sht4x
    answer: bytes  # T msb, lsb, CRC, RH msb, lsb, CRC
    measure_s: float = 0.005
    _ready_at: float | None = None
    commands: list[bytes] = field(default_factory=list)

    def raw_write(self, data: bytes) -> None:
        self.commands.append(data)
        if data != SENSIRION_COMMANDS[self.kind]:
            raise nack()
        self._ready_at = time.monotonic() + self.measure_s

    def raw_read(self, length: int) -> bytes:
        if self._ready_at is None or time.monotonic() < self._ready_at:
            raise nack()  # no measurement, or not done yet: the chip does not acknowledge its read header
        self._ready_at = None
        return self.answer[:length]


# -- ADS1115 -----------------------------------------------------------------------------------------------------

ADS_MUX = {0b000: ("a0", "a1"), 0b001: ("a0", "a3"), 0b010: ("a1", "a3"), 0b011: ("a2", "a3")}
ADS_FS = {
    0b000: 6.144,
    0b001: 4.096,
    0b010: 2.048,
    0b011: 1.024,
    0b100: 0.512,
    0b101: 0.256,
    0b110: 0.256,
    0b111: 0.256,
}
ADS_SPS = (8, 16, 32, 64, 128, 250, 475, 860)


@dataclass
class Ads1115(Device):
    inputs: dict[str, float]  # volts on a0..a3 against GND
    config: int = 0x8583
    conversion: int = 0
    conversions: list[int] = field(default_factory=list)  # each config word that started one
    _done_at: float = 0.0
    _result: int | None = None

    def _settle(self) -> None:
        if self._result is not None and time.monotonic() >= self._done_at:
            self.conversion, self._result = self._result, None
            self.config |= 0x8000

    def _volts(self, mux: int) -> float:
        if mux in ADS_MUX:
            pos, neg = ADS_MUX[mux]
            return self.inputs.get(pos, 0.0) - self.inputs.get(neg, 0.0)
        return self.inputs.get(f"a{mux - 0b100}", 0.0)

    def read(self, register: int, length: int) -> list[int]:
        self._settle()
        if register == 0x00:
            return list(struct.pack(">h", self.conversion))[:length]
        if register == 0x01:
            return list(struct.pack(">H", self.config))[:length]
        raise nack()

    def write(self, register: int, data: list[int]) -> None:
        self._settle()
        if register != 0x01 or len(data) != 2:
            raise nack()
        word = data[0] << 8 | data[1]
        self.config = word & 0x7FFF | (self.config & 0x8000)
        if word & 0x8000 and word & 0x0100:  # OS written in single-shot mode: convert once
            full_scale = ADS_FS[(word >> 9) & 0b111]
            counts = round(self._volts((word >> 12) & 0b111) / full_scale * 32768)
            self._result = max(-32768, min(32767, counts))
            self._done_at = time.monotonic() + 1 / ADS_SPS[(word >> 5) & 0b111]
            self.config &= 0x7FFF
            self.conversions.append(word)


# -- the bus -----------------------------------------------------------------------------------------------------


@dataclass
class FakeBus:
    """The smbus2.SMBus methods the driver uses, over emulated devices keyed by address."""

    devices: dict[int, Device]
    number: int = 1
    closed: bool = False
    calls: list[str] = field(default_factory=list)
    handles: list[FakeBus] = field(default_factory=list)

    def handle(self) -> FakeBus:
        """What one ``SMBus(n)`` returns: its own file descriptor on the same bus (same devices, one call log)."""
        h = FakeBus(self.devices, self.number, calls=self.calls)
        self.handles.append(h)
        return h

    def _device(self, addr: int) -> Device:
        if self.closed:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        if addr not in self.devices:
            raise nack()
        return self.devices[addr]

    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        self.calls.append(f"read_byte_data 0x{i2c_addr:02x} 0x{register:02x}")
        return self._device(i2c_addr).read(register, 1)[0]

    def write_byte_data(self, i2c_addr: int, register: int, value: int, force: bool | None = None) -> None:
        self.calls.append(f"write_byte_data 0x{i2c_addr:02x} 0x{register:02x} 0x{value:02x}")
        self._device(i2c_addr).write(register, [value])

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int, force: bool | None = None) -> list[int]:
        self.calls.append(f"read_i2c_block_data 0x{i2c_addr:02x} 0x{register:02x} {length}")
        return self._device(i2c_addr).read(register, length)

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: list[int], force: bool | None = None) -> None:
        self.calls.append(f"write_i2c_block_data 0x{i2c_addr:02x} 0x{register:02x} {bytes(data).hex()}")
        self._device(i2c_addr).write(register, list(data))

    def i2c_rdwr(self, *i2c_msgs: i2c_msg) -> None:
        for msg in i2c_msgs:
            device = self._device(msg.addr)
            if msg.flags & I2C_M_RD:
                self.calls.append(f"i2c_rdwr read 0x{msg.addr:02x} {msg.len}")
                data = device.raw_read(msg.len)
                ctypes.memmove(msg.buf, data, len(data))
            else:
                self.calls.append(f"i2c_rdwr write 0x{msg.addr:02x} {bytes(msg).hex()}")
                device.raw_write(bytes(msg))

    def close(self) -> None:
        self.closed = True


def device_from_dump(chip: str, text: str) -> Device:
    """A device from a golden case's ``bus.txt``: register lines ``0x88: 70 6b ...``, ``measured 0xf7: ...``
    (a BME280/BMP280's data registers after a measurement), ``answer: be ef 92 ...`` (an SHT's six bytes) or
    ``input a0: 1.25`` (an ADS1115's input volts)."""
    regs: dict[int, int] = {}
    measured = answer = b""
    inputs: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        head, values = (s.strip() for s in line.split(":", 1))
        if head.startswith("measured"):
            measured = bytes.fromhex(values)
        elif head == "answer":
            answer = bytes.fromhex(values)
        elif head.startswith("input"):
            inputs[head.split()[1]] = float(values)
        else:
            regs.update(enumerate(bytes.fromhex(values), start=int(head, 16)))
    if chip in ("bme280", "bmp280"):
        return Bosch(chip_id=regs.pop(0xD0), calibration=regs, measured=measured)
    if chip in SENSIRION_COMMANDS:
        return Sensirion(kind=chip, answer=answer)
    return Ads1115(inputs=inputs)
