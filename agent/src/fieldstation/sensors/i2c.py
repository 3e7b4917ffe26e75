"""I²C sensors through the kernel's i2c-dev interface (``/dev/i2c-N``) with smbus2: BME280, BMP280, SHT3x, SHT4x,
ADS1115.

One driver, one option ``chip``; each chip's registers, commands and conversion constants are data tables below,
taken from its datasheet:

- **BME280 / BMP280** (Bosch BST-BME280-DS002, BST-BMP280-DS001): the chip id (0xD0) is checked, the trimming
  parameters ``dig_T1..dig_P9`` (0x88..0x9F), ``dig_H1`` (0xA1) and ``dig_H2..dig_H6`` (0xE1..0xE7, H4 and H5 packed in
  12 bits) are read once at open, each read is one forced-mode measurement (ctrl_hum before ctrl_meas, as §5.4.3
  requires) followed by a wait for the status register's ``measuring`` bit, and the raw values are compensated with
  the datasheet's double-precision formulas (BME280 §8.1, BMP280 §8.1). The BMP280 has no humidity.
- **SHT3x** (Sensirion SHT3x-DIS): single shot, high repeatability, no clock stretching (command 0x2400), then six
  bytes: temperature and humidity words each followed by a CRC-8 (polynomial 0x31, init 0xFF) that is checked.
- **SHT4x** (Sensirion SHT4x): command 0xFD (high precision), the same six-byte answer and CRC; humidity is cropped to
  0..100 % as the datasheet says (§4.6).
- **ADS1115** (TI SBAS444): one single-shot conversion per channel (mux in the config register), the PGA's full-scale
  range as an option, the OS bit polled until the conversion is done, the signed 16-bit result scaled to volts.

The bus is opened in one place (:func:`open_bus`), so tests put a stand-in for the bus object there. A missing bus,
an address that does not answer, a wrong chip id or a CRC mismatch each fail the read with one line naming the chip,
its address and its bus.
"""

from __future__ import annotations

import contextlib
import errno
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, TypeVar

from pydantic import Field, PrivateAttr, field_validator, model_validator

from fieldstation.sensor import Sensor, SensorError

if TYPE_CHECKING:
    from smbus2 import i2c_msg

Chip = Literal["bme280", "bmp280", "sht3x", "sht4x", "ads1115"]


@dataclass(frozen=True, slots=True)
class ChipInfo:
    title: str
    #: "a" or "an" before the title, as it is spoken ("an SHT3x", "an ADS1115", "a BME280").
    article: str
    #: The addresses the chip can be strapped to; the first is the default.
    addresses: tuple[int, ...]
    #: (field, unit) of what one read returns; the ADS1115's come from its ``channels``.
    fields: tuple[tuple[str, str], ...]


#: What each chip is called, where it answers and what it measures. ``fieldstation scan`` can name the likely chip
#: of an answering address from this table.
CHIPS: dict[str, ChipInfo] = {
    "bme280": ChipInfo("BME280", "a", (0x76, 0x77), (("temperature", "°C"), ("pressure", "hPa"), ("humidity", "%"))),
    "bmp280": ChipInfo("BMP280", "a", (0x76, 0x77), (("temperature", "°C"), ("pressure", "hPa"))),
    "sht3x": ChipInfo("SHT3x", "an", (0x44, 0x45), (("temperature", "°C"), ("humidity", "%"))),
    "sht4x": ChipInfo("SHT4x", "an", (0x44, 0x45, 0x46), (("temperature", "°C"), ("humidity", "%"))),
    "ads1115": ChipInfo("ADS1115", "an", (0x48, 0x49, 0x4A, 0x4B), ()),
}

# -- BME280 / BMP280 (Bosch datasheets, §5 "Global memory map and register description") -----------------------------

BME280_REGISTERS = {
    "calib_tp": 0x88,  # dig_T1..dig_P9: 24 bytes, little-endian
    "calib_h1": 0xA1,  # dig_H1, unsigned char (BME280 only)
    "chip_id": 0xD0,
    "calib_h": 0xE1,  # dig_H2..dig_H6: 7 bytes (BME280 only)
    "ctrl_hum": 0xF2,
    "status": 0xF3,
    "ctrl_meas": 0xF4,
    "config": 0xF5,
    "data": 0xF7,  # press_msb .. hum_lsb: 8 bytes (6 on the BMP280)
}
#: chip_id register value → chip (BME280 §5.4.1, BMP280 §4.3.1).
BOSCH_CHIP_IDS = {0x60: "bme280", 0x58: "bmp280"}
#: The 24 bytes at 0x88: dig_T1 (unsigned short), dig_T2, dig_T3 (signed), dig_P1 (unsigned), dig_P2..dig_P9 (signed).
CALIB_TP_FORMAT = "<HhhHhhhhhhhh"
#: Oversampling ×N → its osrs_x register code (BME280 Tables 20, 22, 24).
OVERSAMPLING = {1: 0b001, 2: 0b010, 4: 0b011, 8: 0b100, 16: 0b101}
FORCED_MODE = 0b01
STATUS_MEASURING = 0x08
STATUS_IM_UPDATE = 0x01  # the trimming parameters are being copied from NVM (at power-on and after a reset)
#: Start-up time (BME280 Table 1, BMP280 Table 2: 2 ms): the NVM copy is done by then.
STARTUP_MS = 2.0
SLEEP_MODE = 0b00
#: A raw value still at its reset value: the measurement was skipped or never ran (BME280 §5.4.7..5.4.9).
SKIPPED_20BIT = 0x80000
SKIPPED_16BIT = 0x8000


def bme280_measure_ms(oversampling: int, humidity: bool) -> float:
    """The longest a forced measurement takes, in ms (BME280 §9.1, BMP280 Table 13 "t_measure,max")."""
    t = 1.25 + 2.3 * oversampling + (2.3 * oversampling + 0.575)
    return t + (2.3 * oversampling + 0.575 if humidity else 0.0)


@dataclass(frozen=True, slots=True)
class BoschCalibration:
    """The trimming parameters of one chip, with the datasheet's names and signedness (BME280 Table 16)."""

    T1: int
    T2: int
    T3: int
    P: tuple[int, ...]  # dig_P1..dig_P9
    H1: int = 0
    H2: int = 0
    H3: int = 0
    H4: int = 0
    H5: int = 0
    H6: int = 0


def _s8(b: int) -> int:
    return b - 256 if b > 127 else b


def parse_calibration(tp: bytes, h1: int | None = None, h: bytes | None = None) -> BoschCalibration:
    """The calibration from the 24 bytes at 0x88 and, for a BME280, dig_H1 (0xA1) and the 7 bytes at 0xE1.

    dig_H4 is 0xE4[7:0] (signed) << 4 | 0xE5[3:0]; dig_H5 is 0xE6[7:0] (signed) << 4 | 0xE5[7:4]; dig_H6 is a signed
    char (BME280 Table 16; Bosch's BME280_driver parses them the same way).
    """
    t1, t2, t3, *p = struct.unpack(CALIB_TP_FORMAT, tp)
    if h1 is None or h is None:
        return BoschCalibration(t1, t2, t3, tuple(p))
    h2 = struct.unpack("<h", h[0:2])[0]
    h4 = (_s8(h[3]) << 4) | (h[4] & 0x0F)
    h5 = (_s8(h[5]) << 4) | (h[4] >> 4)
    return BoschCalibration(t1, t2, t3, tuple(p), h1, h2, h[2], h4, h5, _s8(h[6]))


def compensate(cal: BoschCalibration, adc_t: int, adc_p: int, adc_h: int | None) -> dict[str, float]:
    """°C, hPa and %RH from raw values: the datasheet's double-precision formulas (BME280 §8.1), t_fine as an int."""
    t1, t2, t3 = cal.T1, cal.T2, cal.T3
    var1 = (adc_t / 16384.0 - t1 / 1024.0) * t2
    var2 = (adc_t / 131072.0 - t1 / 8192.0) * (adc_t / 131072.0 - t1 / 8192.0) * t3
    t_fine = int(var1 + var2)  # (BME280_S32_t)(var1 + var2): truncated toward zero
    out = {"temperature": (var1 + var2) / 5120.0}

    p1, p2, p3, p4, p5, p6, p7, p8, p9 = cal.P
    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * p6 / 32768.0
    var2 = var2 + var1 * p5 * 2.0
    var2 = var2 / 4.0 + p4 * 65536.0
    var1 = (p3 * var1 * var1 / 524288.0 + p2 * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * p1
    if var1 == 0.0:
        raise BoschError("dig_P1 is 0: the calibration reads as zeros")
    p = 1048576.0 - adc_p
    p = (p - var2 / 4096.0) * 6250.0 / var1
    var1 = p9 * p * p / 2147483648.0
    var2 = p * p8 / 32768.0
    out["pressure"] = (p + (var1 + var2 + p7) / 16.0) / 100.0  # Pa → hPa

    if adc_h is not None:
        var_h = t_fine - 76800.0
        var_h = (adc_h - (cal.H4 * 64.0 + cal.H5 / 16384.0 * var_h)) * (
            cal.H2 / 65536.0 * (1.0 + cal.H6 / 67108864.0 * var_h * (1.0 + cal.H3 / 67108864.0 * var_h))
        )
        var_h = var_h * (1.0 - cal.H1 * var_h / 524288.0)
        out["humidity"] = min(max(var_h, 0.0), 100.0)
    return out


def decode_bosch_data(data: bytes) -> tuple[int, int, int | None]:
    """(adc_T, adc_P, adc_H or None) from the burst read at 0xF7 (20-bit msb/lsb/xlsb[7:4], 16-bit humidity)."""
    adc_p = (data[0] << 12) | (data[1] << 4) | (data[2] >> 4)
    adc_t = (data[3] << 12) | (data[4] << 4) | (data[5] >> 4)
    adc_h = (data[6] << 8) | data[7] if len(data) >= 8 else None
    if SKIPPED_20BIT in (adc_t, adc_p) or adc_h == SKIPPED_16BIT:
        raise BoschError("the data registers hold their reset value: the measurement did not run")
    return adc_t, adc_p, adc_h


class BoschError(ValueError):
    """Registers of a BME280/BMP280 that hold no valid measurement."""


# -- SHT3x / SHT4x (Sensirion datasheets) -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShtInfo:
    command: bytes
    #: The longest the measurement takes, in ms: the answer is NACKed before.
    duration_ms: float
    #: RH = offset + span · S / 65535.
    rh_offset: float
    rh_span: float


SHT = {
    # SHT3x-DIS Table 9: single shot, repeatability high, clock stretching disabled; Table 4: t_MEAS,h max 15 ms.
    "sht3x": ShtInfo(bytes([0x24, 0x00]), 15.5, 0.0, 100.0),
    # SHT4x Table 7: 0xFD measure T & RH with high precision; Table 4: max 8.3 ms; §4.6: RH = -6 + 125 · S / 65535.
    "sht4x": ShtInfo(bytes([0xFD]), 8.3, -6.0, 125.0),
}
CRC8_POLYNOMIAL = 0x31
CRC8_INIT = 0xFF


def crc8(data: bytes) -> int:
    """Sensirion's CRC-8: polynomial 0x31 (x⁸ + x⁵ + x⁴ + 1), init 0xFF, no reflection, no final XOR."""
    crc = CRC8_INIT
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ CRC8_POLYNOMIAL) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


class CrcError(ValueError):
    """A word whose CRC does not match."""


def decode_sht(chip: str, data: bytes) -> dict[str, float]:
    """°C and %RH from the six bytes an SHT3x/SHT4x answers: T msb, lsb, CRC, RH msb, lsb, CRC."""
    info = SHT[chip]
    if len(data) != 6:
        raise CrcError(f"answer of {len(data)} bytes, expected 6")
    words = []
    for what, i in (("temperature", 0), ("humidity", 3)):
        word, crc = data[i : i + 2], data[i + 2]
        if crc8(word) != crc:
            raise CrcError(
                f"CRC mismatch in the {what} word {word.hex()} (sent 0x{crc:02x}, computed 0x{crc8(word):02x}): "
                "noise on the bus or a loose contact"
            )
        words.append(int.from_bytes(word, "big"))
    rh = info.rh_offset + info.rh_span * words[1] / 65535.0
    return {"temperature": -45.0 + 175.0 * words[0] / 65535.0, "humidity": min(max(rh, 0.0), 100.0)}


# -- ADS1115 (TI SBAS444, §8.6 "Register Map") --------------------------------------------------------------------

ADS1115_REGISTERS = {"conversion": 0x00, "config": 0x01}
#: Channel (field name) → MUX[14:12]: single-ended against GND, or differential (Table 8-3 "Config Register").
ADS1115_MUX = {
    "a0_a1": 0b000,
    "a0_a3": 0b001,
    "a1_a3": 0b010,
    "a2_a3": 0b011,
    "a0": 0b100,
    "a1": 0b101,
    "a2": 0b110,
    "a3": 0b111,
}
#: Full-scale range ±V → PGA[11:9].
ADS1115_PGA = {6.144: 0b000, 4.096: 0b001, 2.048: 0b010, 1.024: 0b011, 0.512: 0b100, 0.256: 0b101}
#: Samples per second → DR[7:5].
ADS1115_DATA_RATE = {8: 0b000, 16: 0b001, 32: 0b010, 64: 0b011, 128: 0b100, 250: 0b101, 475: 0b110, 860: 0b111}
ADS1115_OS = 0x8000  # write: start a single conversion; read: 1 when no conversion is in progress
ADS1115_SINGLE_SHOT = 0x0100  # MODE[8]
ADS1115_COMPARATOR_OFF = 0b11  # COMP_QUE[1:0]: the ALERT pin stays high impedance


def ads1115_config(channel: str, full_scale: float, data_rate: int) -> int:
    """The config word that starts one single-shot conversion of ``channel``."""
    return (
        ADS1115_OS
        | ADS1115_MUX[channel] << 12
        | ADS1115_PGA[full_scale] << 9
        | ADS1115_SINGLE_SHOT
        | ADS1115_DATA_RATE[data_rate] << 5
        | ADS1115_COMPARATOR_OFF
    )


def ads1115_volts(data: bytes, full_scale: float) -> float:
    """Volts from the conversion register: a signed 16-bit big-endian count, 32768 counts to full scale."""
    return int.from_bytes(data[:2], "big", signed=True) * full_scale / 32768.0


# -- the bus --------------------------------------------------------------------------------------------------------


class Bus(Protocol):
    """What the driver uses of :class:`smbus2.SMBus`."""

    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int: ...
    def write_byte_data(self, i2c_addr: int, register: int, value: int, force: bool | None = None) -> None: ...
    def read_i2c_block_data(
        self, i2c_addr: int, register: int, length: int, force: bool | None = None
    ) -> list[int]: ...
    def write_i2c_block_data(
        self, i2c_addr: int, register: int, data: list[int], force: bool | None = None
    ) -> None: ...
    def i2c_rdwr(self, *i2c_msgs: i2c_msg) -> None: ...
    def close(self) -> None: ...


def open_bus(number: int) -> Bus:
    """``/dev/i2c-<number>`` through smbus2: the one place the driver touches the kernel (tests replace it)."""
    from smbus2 import SMBus

    return SMBus(number)


#: errnos with which i2c-dev reports an address that did not acknowledge.
NACK_ERRNOS = {errno.EREMOTEIO, errno.ENXIO, errno.EIO}
#: How long past its datasheet maximum a measurement may still run before the read fails.
WAIT_FACTOR = 3.0
POLL_S = 0.001

T = TypeVar("T")


class I2c(Sensor):
    """A BME280, BMP280, SHT3x, SHT4x or ADS1115 on an I²C bus of the Pi (smbus2 over /dev/i2c-N)."""

    driver: ClassVar[str] = "i2c"
    requires: ClassVar[tuple[str, ...]] = ("smbus2",)

    chip: Chip = Field(description="bme280, bmp280, sht3x, sht4x or ads1115.")
    bus_number: int = Field(1, ge=0, description="N of /dev/i2c-N; 1 is the Pi's GPIO 2/3 header bus.")
    address: int | None = Field(None, description="7-bit address; default the chip's first (0x76, 0x44, 0x48).")
    oversampling: Literal[1, 2, 4, 8, 16] = Field(1, description="BME280/BMP280: oversampling of every value.")
    channels: list[str] = Field(
        default_factory=lambda: ["a0"],
        description="ADS1115: inputs to convert, each a field: a0..a3 (against GND) or a0_a1, a0_a3, a1_a3, a2_a3.",
    )
    full_scale: float = Field(
        4.096, description="ADS1115: PGA full-scale range ±V: 6.144, 4.096, 2.048, 1.024, 0.512 or 0.256."
    )
    data_rate: int = Field(128, description="ADS1115: samples per second: 8, 16, 32, 64, 128, 250, 475 or 860.")

    _bus: Bus | None = PrivateAttr(default=None)
    _calibration: BoschCalibration | None = PrivateAttr(default=None)

    @field_validator("channels")
    @classmethod
    def _channels_known(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("channels must name at least one input")
        for ch in v:
            if ch not in ADS1115_MUX:
                raise ValueError(f"channel {ch!r} is not an ADS1115 input (one of {', '.join(ADS1115_MUX)})")
        if len(set(v)) != len(v):
            raise ValueError(f"channels {v} name an input twice")
        return v

    @field_validator("full_scale")
    @classmethod
    def _pga_known(cls, v: float) -> float:
        if v not in ADS1115_PGA:
            ranges = ", ".join(map(str, ADS1115_PGA))
            raise ValueError(f"full_scale {v:g} V is not a PGA range of the ADS1115 ({ranges})")
        return v

    @field_validator("data_rate")
    @classmethod
    def _rate_known(cls, v: int) -> int:
        if v not in ADS1115_DATA_RATE:
            raise ValueError(f"data_rate {v} is not one of the ADS1115's ({', '.join(map(str, ADS1115_DATA_RATE))})")
        return v

    @model_validator(mode="after")
    def _address_and_units(self) -> I2c:
        info = CHIPS[self.chip]
        if self.address is None:
            self.address = info.addresses[0]
        elif self.address not in info.addresses:
            known = ", ".join(f"0x{a:02x}" for a in info.addresses)
            chip = f"{info.article} {info.title}"
            raise ValueError(f"address 0x{self.address:02x} is not one {chip} answers on ({known})")
        if self.chip != "ads1115":
            for option in ("channels", "full_scale", "data_rate"):
                if option in self.model_fields_set:
                    raise ValueError(f"{option} is an ADS1115 option; {info.article} {info.title} has none")
        if self.chip not in ("bme280", "bmp280") and "oversampling" in self.model_fields_set:
            raise ValueError(f"oversampling is a BME280/BMP280 option; {info.article} {info.title} has none")
        if isinstance(self.unit, str) and not self.unit:
            self.unit = dict(self._field_units())
        elif isinstance(self.unit, dict):  # the fields it does not name keep their own unit
            self.unit = {**dict(self._field_units()), **self.unit}
        return self

    def _field_units(self) -> list[tuple[str, str]]:
        if self.chip == "ads1115":
            return [(ch, "V") for ch in self.channels]
        return list(CHIPS[self.chip].fields)

    @property
    def bus(self) -> str:
        # One transaction at a time on one bus: an SHT's command and its answer must not be split by another read.
        return f"i2c:{self.bus_number}"

    @property
    def where(self) -> str:
        """``BME280 at 0x76 on /dev/i2c-1``: how every error names the chip."""
        return f"{CHIPS[self.chip].title} at 0x{self.address or 0:02x} on /dev/i2c-{self.bus_number}"

    def declared_fields(self) -> list[str]:
        return [f for f, _ in self._field_units()]

    def dashboard_fields(self) -> list[str]:
        return self.declared_fields()

    # -- open, read, close ----------------------------------------------------------------------------------------

    def open(self) -> None:
        path = f"/dev/i2c-{self.bus_number}"
        try:
            self._bus = open_bus(self.bus_number)
        except FileNotFoundError:
            raise SensorError(
                f"{self.where}: {path} does not exist (enable I²C: dtparam=i2c_arm=on in config.txt, or pick the "
                "bus_number that `ls /dev/i2c-*` shows)"
            ) from None
        except PermissionError:
            raise SensorError(f"{self.where}: permission denied opening {path} (the agent needs its group)") from None
        except OSError as exc:
            raise SensorError(f"{self.where}: cannot open {path}: {exc.strerror or exc}") from None
        try:
            if self.chip in ("bme280", "bmp280"):
                self._open_bosch()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        bus, self._bus = self._bus, None
        if bus is not None:
            with contextlib.suppress(OSError):  # the file descriptor is gone either way
                bus.close()

    def read(self) -> dict[str, float]:
        if self._bus is None:
            self.open()
        if self.chip in ("bme280", "bmp280"):
            return self._read_bosch()
        if self.chip in SHT:
            return self._read_sht()
        return self._read_ads1115()

    # -- the chips --------------------------------------------------------------------------------------------------

    def _io(self, what: str, call: Callable[[], T]) -> T:
        """One bus transaction; an OSError becomes one line naming the chip, its address and its bus."""
        try:
            return call()
        except OSError as exc:
            if exc.errno in NACK_ERRNOS:
                raise SensorError(
                    f"{self.where}: no answer while {what} ({exc.strerror or exc}): check the wiring and the address "
                    f"(i2cdetect -y {self.bus_number})"
                ) from None
            raise SensorError(f"{self.where}: {what} failed: {exc.strerror or exc}") from None

    def _wait(self, done: Callable[[], bool], max_ms: float, what: str, poll_ms: float | None = None) -> None:
        """Sleep ``max_ms`` (the datasheet's longest duration), then poll ``done`` for up to WAIT_FACTOR times
        ``poll_ms`` (default ``max_ms``) more."""
        time.sleep(max_ms / 1000.0)
        limit_ms = WAIT_FACTOR * (max_ms if poll_ms is None else poll_ms)
        deadline = time.monotonic() + limit_ms / 1000.0
        while not done():
            if time.monotonic() > deadline:
                raise SensorError(f"{self.where}: {what} did not finish within {max_ms + limit_ms:g} ms")
            time.sleep(POLL_S)

    def _open_bosch(self) -> None:
        bus, addr, regs = self._bus, self.address or 0, BME280_REGISTERS
        assert bus is not None
        chip_id = self._io("reading the chip id", lambda: bus.read_byte_data(addr, regs["chip_id"]))
        found = BOSCH_CHIP_IDS.get(chip_id)
        if found != self.chip:
            expected = next(i for i, c in BOSCH_CHIP_IDS.items() if c == self.chip)
            hint = f": it is a {CHIPS[found].title}, set chip={found!r}" if found else ": another chip at this address?"
            raise SensorError(f"{self.where}: chip id 0x{chip_id:02x}, expected 0x{expected:02x}{hint}")
        # A chip just powered up (or reset) is still copying its trimming parameters to the registers read below.
        self._wait(
            lambda: not self._io("reading status", lambda: bus.read_byte_data(addr, regs["status"])) & STATUS_IM_UPDATE,
            0.0,
            "the copy of the calibration from NVM",
            poll_ms=STARTUP_MS,
        )
        tp = bytes(self._io("reading the calibration", lambda: bus.read_i2c_block_data(addr, regs["calib_tp"], 24)))
        if self.chip == "bme280":
            h1 = self._io("reading the calibration", lambda: bus.read_byte_data(addr, regs["calib_h1"]))
            h = bytes(self._io("reading the calibration", lambda: bus.read_i2c_block_data(addr, regs["calib_h"], 7)))
            self._calibration = parse_calibration(tp, h1, h)
        else:
            self._calibration = parse_calibration(tp)
        # Filter off, standby irrelevant in forced mode: every read is one fresh measurement (BME280 §3.5.1, the
        # weather-monitoring setting). Writes to config may be ignored in normal mode (§5.4.6), where another program
        # may have left the chip: sleep mode first.
        self._io("writing ctrl_meas", lambda: bus.write_byte_data(addr, regs["ctrl_meas"], SLEEP_MODE))
        self._io("writing config", lambda: bus.write_byte_data(addr, regs["config"], 0x00))

    def _read_bosch(self) -> dict[str, float]:
        bus, addr, regs = self._bus, self.address or 0, BME280_REGISTERS
        assert bus is not None and self._calibration is not None
        humidity = self.chip == "bme280"
        osrs = OVERSAMPLING[self.oversampling]
        if humidity:  # ctrl_hum takes effect only after a write to ctrl_meas (BME280 §5.4.3)
            self._io("writing ctrl_hum", lambda: bus.write_byte_data(addr, regs["ctrl_hum"], osrs))
        meas = osrs << 5 | osrs << 2 | FORCED_MODE
        self._io("starting a measurement", lambda: bus.write_byte_data(addr, regs["ctrl_meas"], meas))
        self._wait(
            lambda: not self._io("reading status", lambda: bus.read_byte_data(addr, regs["status"])) & STATUS_MEASURING,
            bme280_measure_ms(self.oversampling, humidity),
            "the measurement",
        )
        length = 8 if humidity else 6
        data = bytes(self._io("reading the data", lambda: bus.read_i2c_block_data(addr, regs["data"], length)))
        try:
            adc_t, adc_p, adc_h = decode_bosch_data(data)
            return compensate(self._calibration, adc_t, adc_p, adc_h)
        except BoschError as exc:
            raise SensorError(f"{self.where}: {exc}") from None

    def _read_sht(self) -> dict[str, float]:
        from smbus2 import i2c_msg

        bus, addr, info = self._bus, self.address or 0, SHT[self.chip]
        assert bus is not None
        self._io("sending the measure command", lambda: bus.i2c_rdwr(i2c_msg.write(addr, info.command)))
        answer = i2c_msg.read(addr, 6)

        def answered() -> bool:
            try:
                bus.i2c_rdwr(answer)
            except OSError as exc:
                if exc.errno in NACK_ERRNOS:
                    return False  # the chip NACKs its read header until the measurement is done (SHT3x-DIS §4.4)
                raise
            return True

        self._wait(lambda: self._io("reading the measurement", answered), info.duration_ms, "the measurement")
        try:
            return decode_sht(self.chip, bytes(answer))
        except CrcError as exc:
            raise SensorError(f"{self.where}: {exc}", reopen=False) from None

    def _read_ads1115(self) -> dict[str, float]:
        return {ch: self._convert(ch) for ch in self.channels}

    def _convert(self, ch: str) -> float:
        """One single-shot conversion of ``ch``: write the config word, wait for OS, read the result."""
        bus, addr, regs = self._bus, self.address or 0, ADS1115_REGISTERS
        assert bus is not None
        word = ads1115_config(ch, self.full_scale, self.data_rate)
        self._io(
            f"starting a conversion of {ch}",
            lambda: bus.write_i2c_block_data(addr, regs["config"], [word >> 8, word & 0xFF]),
        )
        config = 0

        def idle() -> bool:
            nonlocal config
            raw = self._io("reading config", lambda: bus.read_i2c_block_data(addr, regs["config"], 2))
            config = int.from_bytes(bytes(raw), "big")
            return bool(config & ADS1115_OS)

        self._wait(idle, 1000.0 / self.data_rate + 0.1, f"the conversion of {ch}")  # +0.1 ms: the wake-up
        if config & ~ADS1115_OS != word & ~ADS1115_OS:
            raise SensorError(
                f"{self.where}: config reads 0x{config:04x} after 0x{word:04x} was written: another chip at this "
                "address?"
            )
        data = bytes(self._io(f"reading {ch}", lambda: bus.read_i2c_block_data(addr, regs["conversion"], 2)))
        return ads1115_volts(data, self.full_scale)
