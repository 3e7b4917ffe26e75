"""The i2c driver against emulated chips on a stand-in bus object (tests/harness/i2c.py), the narrowest boundary
this machine allows (no i2c-stub module). Expected values come from the datasheets, as each test says."""

from __future__ import annotations

import errno
import inspect
import os
import struct
import threading
from pathlib import Path

import pytest
import smbus2
from pydantic import ValidationError

from fieldstation.reading import Reading
from fieldstation.scheduler import Scheduler
from fieldstation.sensor import SensorError, process
from fieldstation.sensors import i2c
from fieldstation.sensors.i2c import (
    I2c,
    ads1115_config,
    ads1115_volts,
    compensate,
    crc8,
    decode_sht,
    parse_calibration,
)
from harness.agent import wait_for
from harness.i2c import (
    Ads1115,
    Bosch,
    Device,
    FakeBus,
    Sensirion,
    bosch_calibration_bytes,
    bosch_data_bytes,
)

T0 = 1_700_000_000_000_000_000

# BMP280 datasheet (BST-BMP280-DS001) §3.12 Table 16, "Compensation example": trimming values, raw readings and
# results. The BME280 shares the temperature and pressure formulas and registers.
DS_T = (27504, 26435, -1000)
DS_P = (36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000)
DS_ADC_T, DS_ADC_P = 519888, 415148
# Humidity trimming of a typical BME280 (the datasheet gives no humidity example; see the int32 cross-check below).
H = (75, 362, 0, 313, 50, 30)


def bme280(measured: bytes | None = None, chip_id: int = 0x60, **kw: float) -> Bosch:
    humidity = chip_id == 0x60
    return Bosch(
        chip_id=chip_id,
        calibration=bosch_calibration_bytes(DS_T, DS_P, H if humidity else None),
        measured=measured or bosch_data_bytes(DS_ADC_T, DS_ADC_P, 31000 if humidity else None),
        **kw,  # type: ignore[arg-type]
    )


def sht_answer(t: int, rh: int, bad: str = "") -> bytes:
    tb, rb = t.to_bytes(2, "big"), rh.to_bytes(2, "big")
    return tb + bytes([crc8(tb) ^ (bad == "temperature")]) + rb + bytes([crc8(rb) ^ (bad == "humidity")])


@pytest.fixture
def bus(monkeypatch: pytest.MonkeyPatch) -> FakeBus:
    """An empty bus 1 put where the driver opens /dev/i2c-N (each open its own handle); tests plug devices in."""
    fake = FakeBus({})
    monkeypatch.setattr(i2c, "open_bus", lambda number: fake.handle())
    return fake


def test_the_stand_in_has_only_methods_smbus2_has_with_their_parameters() -> None:
    for name, method in inspect.getmembers(FakeBus, inspect.isfunction):
        if name.startswith("_") or name == "handle":  # handle(): the test's SMBus(n), not a method of the bus
            continue
        real = getattr(smbus2.SMBus, name)
        assert list(inspect.signature(method).parameters) == list(inspect.signature(real).parameters), name
    for name in ("read_byte_data", "write_byte_data", "read_i2c_block_data", "write_i2c_block_data", "i2c_rdwr"):
        assert name in i2c.Bus.__dict__


# -- pure functions against the datasheets ------------------------------------------------------------------------


def test_crc8_matches_the_sensirion_datasheet_example() -> None:
    # SHT3x-DIS §4.12 Table 19 and SHT4x §4.4: CRC(0xBEEF) = 0x92.
    assert crc8(bytes([0xBE, 0xEF])) == 0x92


def test_compensation_gives_the_bmp280_datasheet_example() -> None:
    cal = parse_calibration(struct.pack("<HhhHhhhhhhhh", *DS_T, *DS_P))
    assert cal.P == DS_P
    assert (cal.T1, cal.T2, cal.T3) == DS_T
    out = compensate(cal, DS_ADC_T, DS_ADC_P, None)
    # Table 16: T = 25.08 °C (var1 = 128793.1787, var2 = -370.8917052, t_fine = 128422).
    assert out["temperature"] == pytest.approx(25.08247793, abs=1e-8)
    assert round(out["temperature"], 2) == 25.08
    # Table 16: p = 100653.27 Pa, computed there with t_fine unrounded; the datasheet's C code truncates t_fine to
    # an int (as we do), which moves p by 0.009 Pa.
    assert out["pressure"] * 100 == pytest.approx(100653.27, abs=0.02)
    assert "humidity" not in out


def _datasheet_int32(cal: i2c.BoschCalibration, adc_t: int, adc_p: int, adc_h: int) -> tuple[float, float, float]:
    """BME280 §4.2.3, the fixed-point formulas, transcribed (>> on negatives is arithmetic, as in Bosch's code):
    an independent computation to check the double-precision ones against."""

    def tdiv(a: int, b: int) -> int:  # C's / on integers truncates toward zero
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b >= 0) else -q

    var1 = (((adc_t >> 3) - (cal.T1 << 1)) * cal.T2) >> 11
    var2 = (((((adc_t >> 4) - cal.T1) * ((adc_t >> 4) - cal.T1)) >> 12) * cal.T3) >> 14
    t_fine = var1 + var2
    t = (t_fine * 5 + 128) >> 8
    p1, p2, p3, p4, p5, p6, p7, p8, p9 = cal.P
    v1 = t_fine - 128000
    v2 = v1 * v1 * p6 + ((v1 * p5) << 17) + (p4 << 35)
    v1 = ((v1 * v1 * p3) >> 8) + ((v1 * p2) << 12)
    v1 = (((1 << 47) + v1) * p1) >> 33
    p = tdiv(((1048576 - adc_p) << 31) - v2, 1) * 3125
    p = tdiv(p, v1)
    v1 = (p9 * (p >> 13) * (p >> 13)) >> 25
    v2 = (p8 * p) >> 19
    p = ((p + v1 + v2) >> 8) + (p7 << 4)
    x = t_fine - 76800
    x = ((((adc_h << 14) - (cal.H4 << 20) - (cal.H5 * x)) + 16384) >> 15) * (
        ((((((x * cal.H6) >> 10) * (((x * cal.H3) >> 11) + 32768)) >> 10) + 2097152) * cal.H2 + 8192) >> 14
    )
    x = x - (((((x >> 15) * (x >> 15)) >> 7) * cal.H1) >> 4)
    x = min(max(x, 0), 419430400)
    return t / 100, p / 256, (x >> 12) / 1024


def test_the_double_formulas_agree_with_the_datasheet_fixed_point_ones() -> None:
    cal = parse_calibration(
        struct.pack("<HhhHhhhhhhhh", *DS_T, *DS_P),
        H[0],
        bytes(bosch_calibration_bytes(DS_T, DS_P, H)[r] for r in range(0xE1, 0xE8)),
    )
    # The datasheet example itself: int32 T = 2508 (0.01 °C), and the int64 pressure.
    t, p, _ = _datasheet_int32(cal, DS_ADC_T, DS_ADC_P, 31000)
    assert t == 25.08
    assert p == pytest.approx(100653.25, abs=0.01)
    inside = 0
    for adc_t in (380000, 450000, DS_ADC_T, 560000):
        for adc_h in (20000, 27000, 31000, 36000):
            t, p, h = _datasheet_int32(cal, adc_t, DS_ADC_P, adc_h)
            out = compensate(cal, adc_t, DS_ADC_P, adc_h)
            assert out["temperature"] == pytest.approx(t, abs=0.01)  # int32 resolution: 0.01 °C
            assert out["pressure"] * 100 == pytest.approx(p, abs=0.05)  # Q24.8 rounding
            assert out["humidity"] == pytest.approx(h, abs=0.02)  # Q22.10 and its truncation on the way
            inside += 0 < h < 100
    assert inside >= 10, "most of the sweep is compared inside 0..100 %, not on the clamps"


def test_humidity_trimming_is_unpacked_with_its_signs() -> None:
    # dig_H4 and dig_H5 are signed 12-bit values sharing 0xE5 (BME280 Table 16); dig_H2 and dig_H6 are signed too.
    negative = (200, -300, 17, -1000, -1500, -40)
    regs = bosch_calibration_bytes(DS_T, DS_P, negative)
    h = bytes(regs[r] for r in range(0xE1, 0xE8))
    cal = parse_calibration(struct.pack("<HhhHhhhhhhhh", *DS_T, *DS_P), regs[0xA1], h)
    unpacked = (cal.H1, cal.H2, cal.H3, cal.H4, cal.H5, cal.H6)
    assert unpacked == negative
    assert (cal.T3, cal.P[1], cal.P[5], cal.P[7]) == (-1000, -10685, -7, -14600)


def test_sht_conversions_follow_the_datasheets() -> None:
    # SHT3x-DIS §4.13: T = -45 + 175 · S_T / 65535, RH = 100 · S_RH / 65535.
    out = decode_sht("sht3x", sht_answer(0x6666, 0x8000))
    assert out["temperature"] == pytest.approx(-45 + 175 * 0x6666 / 65535)
    assert out["humidity"] == pytest.approx(100 * 0x8000 / 65535)
    assert decode_sht("sht3x", sht_answer(0xFFFF, 0))["temperature"] == pytest.approx(130.0)
    # SHT4x §4.6: RH = -6 + 125 · S_RH / 65535, cropped to 0..100.
    out = decode_sht("sht4x", sht_answer(0x6666, 0x8000))
    assert out["humidity"] == pytest.approx(-6 + 125 * 0x8000 / 65535)
    assert decode_sht("sht4x", sht_answer(0x6666, 0))["humidity"] == 0.0
    assert decode_sht("sht4x", sht_answer(0x6666, 0xFFFF))["humidity"] == 100.0


def test_ads1115_config_word_and_output_codes() -> None:
    # SBAS444 §8.6.3: the config register's reset value 0x8583 is AIN0-AIN1, ±2.048 V, single-shot, 128 SPS,
    # comparator off; OS (bit 15) set to start a conversion.
    assert ads1115_config("a0_a1", 2.048, 128) == 0x8583
    assert ads1115_config("a3", 6.144, 860) == 0x8000 | 0b111 << 12 | 0b000 << 9 | 0x0100 | 0b111 << 5 | 0b11
    # §8.3.3 Table 8-3 "Output codes": 0x7FFF = +FS - 1 LSB, 0x8000 = -FS, 0xFFFF = -1 LSB (FS / 2^15).
    assert ads1115_volts(b"\x7f\xff", 4.096) == pytest.approx(4.096 - 4.096 / 32768)
    assert ads1115_volts(b"\x80\x00", 4.096) == -4.096
    assert ads1115_volts(b"\xff\xff", 0.256) == pytest.approx(-0.256 / 32768)


# -- the driver over the bus --------------------------------------------------------------------------------------


def test_bme280_forced_measurement_in_datasheet_order(bus: FakeBus) -> None:
    bus.devices[0x76] = chip = bme280()
    sensor = I2c(name="outside", chip="bme280", oversampling=2)
    sensor.open()
    first = sensor.read()
    second = sensor.read()
    sensor.close()
    assert chip.measurements == 2, "every read is one forced measurement"
    assert first == second
    assert first["temperature"] == pytest.approx(25.0825, abs=1e-4)
    assert first["pressure"] == pytest.approx(1006.5327, abs=2e-4)
    assert 0 < first["humidity"] < 100
    writes = [c for c in bus.calls if c.startswith("write_byte_data")]
    # sleep mode and config (filter off) once at open; then per read ctrl_hum (×2) before ctrl_meas (×2 T and P,
    # forced mode).
    assert writes == [
        "write_byte_data 0x76 0xf4 0x00",
        "write_byte_data 0x76 0xf5 0x00",
        "write_byte_data 0x76 0xf2 0x02",
        "write_byte_data 0x76 0xf4 0x49",
        "write_byte_data 0x76 0xf2 0x02",
        "write_byte_data 0x76 0xf4 0x49",
    ]
    assert "read_i2c_block_data 0x76 0xf7 8" in bus.calls
    assert "read_byte_data 0x76 0xf3" in bus.calls
    assert [h.closed for h in bus.handles] == [True]


def test_a_chip_just_powered_up_is_read_after_its_nvm_copy(bus: FakeBus) -> None:
    # While im_update (status bit 0) is set the trimming registers are not valid yet (here they read 0).
    bus.devices[0x76] = bme280(nvm_s=0.004)
    sensor = I2c(name="outside", chip="bme280")
    sensor.open()
    assert sensor.read()["pressure"] == pytest.approx(1006.53, abs=0.01)


def test_a_chip_left_in_normal_mode_is_put_to_sleep_before_its_config(bus: FakeBus) -> None:
    # Another program left it measuring continuously with the IIR filter on; config writes are ignored then.
    bus.devices[0x76] = chip = bme280(mode=0b11)
    sensor = I2c(name="outside", chip="bme280")
    sensor.open()
    assert chip.regs[0xF5] == 0x00, "filter off"
    assert sensor.read()["temperature"] == pytest.approx(25.08, abs=0.01)
    assert chip.measurements == 1


def test_a_measurement_slower_than_the_datasheet_maximum_is_waited_for(bus: FakeBus) -> None:
    # The maximum at ×1 is 9.3 ms (BME280 §9.1); this chip takes 25 ms: the driver polls the measuring bit.
    bus.devices[0x76] = bme280(measure_s=0.025)
    sensor = I2c(name="outside", chip="bme280")
    sensor.open()
    assert sensor.read()["temperature"] == pytest.approx(25.08, abs=0.01)
    assert bus.calls.count("read_byte_data 0x76 0xf3") > 1


def test_a_measurement_that_never_ends_fails_the_read(bus: FakeBus) -> None:
    bus.devices[0x76] = bme280(measure_s=60)
    sensor = I2c(name="outside", chip="bme280")
    sensor.open()
    with pytest.raises(SensorError, match=r"^BME280 at 0x76 on /dev/i2c-1: the measurement did not finish within"):
        sensor.read()


def test_bmp280_reads_no_humidity(bus: FakeBus) -> None:
    bus.devices[0x77] = chip = bme280(chip_id=0x58)
    sensor = I2c(name="baro", chip="bmp280", address=0x77)
    sensor.open()
    out = sensor.read()
    assert set(out) == {"temperature", "pressure"}
    assert sensor.declared_fields() == ["temperature", "pressure"]
    assert sensor.unit == {"temperature": "°C", "pressure": "hPa"}
    assert not any(c.startswith("write_byte_data 0x77 0xf2") for c in bus.calls)
    assert "read_i2c_block_data 0x77 0xf7 6" in bus.calls
    assert chip.measurements == 1


def test_skipped_values_are_an_error_not_a_reading(bus: FakeBus) -> None:
    # Data registers still at their reset value 0x80000: what a chip whose measurement never ran returns.
    bus.devices[0x76] = bme280(measured=bytes([0x80, 0, 0, 0x80, 0, 0, 0x80, 0]))
    sensor = I2c(name="outside", chip="bme280")
    sensor.open()
    with pytest.raises(SensorError, match="hold their reset value: the measurement did not run"):
        sensor.read()


@pytest.mark.parametrize(
    ("chip", "chip_id", "message"),
    [
        (
            "bme280",
            0x58,
            "BME280 at 0x76 on /dev/i2c-1: chip id 0x58, expected 0x60: it is a BMP280, set chip='bmp280'",
        ),
        (
            "bmp280",
            0x60,
            "BMP280 at 0x76 on /dev/i2c-1: chip id 0x60, expected 0x58: it is a BME280, set chip='bme280'",
        ),
        ("bme280", 0x61, "BME280 at 0x76 on /dev/i2c-1: chip id 0x61, expected 0x60: another chip at this address?"),
    ],
)
def test_a_wrong_chip_id_is_one_clear_error(bus: FakeBus, chip: str, chip_id: int, message: str) -> None:
    bus.devices[0x76] = bme280(chip_id=chip_id)
    sensor = I2c(name="x", chip=chip)  # type: ignore[arg-type]
    with pytest.raises(SensorError) as exc:
        sensor.open()
    assert str(exc.value) == message
    assert [h.closed for h in bus.handles] == [True], "a failed open leaves no file descriptor behind"


@pytest.mark.parametrize(
    ("chip", "address", "what"),
    [
        ("bme280", 0x76, "reading the chip id"),
        ("sht3x", 0x44, "sending the measure command"),
        ("sht4x", 0x46, "sending the measure command"),
        ("ads1115", 0x4B, "starting a conversion of a0"),
    ],
)
def test_an_address_that_does_not_answer(bus: FakeBus, chip: str, address: int, what: str) -> None:
    bus.devices[0x77] = bme280()  # something else on the bus
    sensor = I2c(name="x", chip=chip, address=address)  # type: ignore[arg-type]
    with pytest.raises(SensorError) as exc:
        sensor.read()
    title = i2c.CHIPS[chip].title
    assert str(exc.value) == (
        f"{title} at 0x{address:02x} on /dev/i2c-1: no answer while {what} (Remote I/O error): check the wiring and "
        "the address (i2cdetect -y 1)"
    )


def test_a_missing_bus_is_one_clear_error() -> None:
    # The real smbus2 opening a bus this machine does not have.
    assert not Path("/dev/i2c-250").exists()
    sensor = I2c(name="room", chip="sht3x", bus_number=250)
    with pytest.raises(SensorError) as exc:
        sensor.read()
    assert str(exc.value) == (
        "SHT3x at 0x44 on /dev/i2c-250: /dev/i2c-250 does not exist (enable I²C: dtparam=i2c_arm=on in config.txt, or "
        "pick the bus_number that `ls /dev/i2c-*` shows)"
    )


def test_a_device_that_is_not_an_i2c_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real smbus2 on a file that refuses i2c-dev's ioctl: a plain OSError, still one line.
    monkeypatch.setattr(i2c, "open_bus", lambda number: smbus2.SMBus(str(tmp_path / "bus")))
    (tmp_path / "bus").write_bytes(b"")
    sensor = I2c(name="room", chip="sht3x")
    with pytest.raises(SensorError, match=r"^SHT3x at 0x44 on /dev/i2c-1: cannot open /dev/i2c-1: "):
        sensor.open()


def test_a_device_lost_mid_way_is_reported_and_reopened(bus: FakeBus) -> None:
    bus.devices[0x76] = chip = bme280()
    sensor = I2c(name="outside", chip="bme280")
    sensor.open()
    del bus.devices[0x76]
    with pytest.raises(SensorError, match="no answer while writing ctrl_hum"):
        sensor.read()
    sensor.close()  # what the scheduler does after a failure, then open again with backoff
    bus.devices[0x76] = chip
    sensor.open()
    assert sensor.read()["temperature"] == pytest.approx(25.08, abs=0.01)


def test_sht3x_single_shot_waits_through_nacks_and_checks_crc(bus: FakeBus) -> None:
    # The answer is NACKed until the measurement is done; this chip takes 30 ms, past the 15.5 ms slept first.
    bus.devices[0x44] = chip = Sensirion(kind="sht3x", answer=sht_answer(0x6666, 0x8000), measure_s=0.03)
    sensor = I2c(name="room", chip="sht3x")
    out = sensor.read()
    assert chip.commands == [bytes([0x24, 0x00])]
    assert out == {"temperature": pytest.approx(25.0, abs=1e-3), "humidity": pytest.approx(50.0, abs=1e-2)}
    assert bus.calls.count("i2c_rdwr read 0x44 6") >= 1
    lines = [r.to_line() for r in process(sensor, out, T0).readings]
    assert lines[0].startswith("i2c,sensor=room,unit=°C temperature=25.0")


@pytest.mark.parametrize("bad", ["temperature", "humidity"])
def test_a_bad_crc_fails_the_read_without_reopening(bus: FakeBus, bad: str) -> None:
    bus.devices[0x45] = Sensirion(kind="sht3x", answer=sht_answer(0x6666, 0x8000, bad=bad))
    sensor = I2c(name="room", chip="sht3x", address=0x45)
    with pytest.raises(SensorError) as exc:
        sensor.read()
    assert str(exc.value).startswith(f"SHT3x at 0x45 on /dev/i2c-1: CRC mismatch in the {bad} word ")
    assert exc.value.reopen is False


def test_sht4x_sends_its_own_command(bus: FakeBus) -> None:
    bus.devices[0x44] = chip = Sensirion(kind="sht4x", answer=sht_answer(0x6666, 0x8000))
    out = I2c(name="cellar", chip="sht4x").read()
    assert chip.commands == [bytes([0xFD])]
    assert out["humidity"] == pytest.approx(-6 + 125 * 0x8000 / 65535)


def test_an_sht3x_command_sent_to_an_sht4x_is_nacked(bus: FakeBus) -> None:
    bus.devices[0x44] = Sensirion(kind="sht4x", answer=sht_answer(0x6666, 0x8000))
    with pytest.raises(SensorError, match=r"^SHT3x at 0x44 on /dev/i2c-1: no answer while sending the measure command"):
        I2c(name="room", chip="sht3x").read()


def test_ads1115_converts_each_channel_once(bus: FakeBus) -> None:
    bus.devices[0x48] = chip = Ads1115(inputs={"a0": 1.25, "a1": 1.75, "a2": 0.0, "a3": -0.2})
    sensor = I2c(
        name="analog", chip="ads1115", channels=["a0", "a0_a1", "a2_a3", "a1"], full_scale=2.048, data_rate=860
    )
    out = sensor.read()
    # 2.048 V / 32768 = 62.5 µV per count: 1.25 V is 20000 counts exactly.
    assert out == {"a0": 1.25, "a0_a1": -0.5, "a2_a3": pytest.approx(0.2, abs=62.5e-6), "a1": 1.75}
    assert [w >> 12 & 0b111 for w in chip.conversions] == [0b100, 0b000, 0b011, 0b101]
    assert all(w & 0x8100 == 0x8100 for w in chip.conversions), "OS and single-shot set on every conversion"
    assert sensor.unit == {"a0": "V", "a0_a1": "V", "a2_a3": "V", "a1": "V"}


def test_ads1115_a_chip_that_does_not_hold_its_config_is_not_an_ads1115(bus: FakeBus) -> None:
    class Other(Device):  # answers every register with the same bytes, OS set
        def read(self, register: int, length: int) -> list[int]:
            return [0x80, 0x00][:length]

        def write(self, register: int, data: list[int]) -> None:
            pass

    bus.devices[0x48] = Other()
    with pytest.raises(SensorError, match=r"config reads 0x8000 after 0xc383 was written: another chip"):
        I2c(name="analog", chip="ads1115").read()


def test_the_scheduler_reads_two_chips_of_one_bus_and_recovers_from_a_lost_one(bus: FakeBus) -> None:
    bus.devices[0x76] = bme = bme280()
    bus.devices[0x44] = Sensirion(kind="sht3x", answer=sht_answer(0x6666, 0x8000))
    readings: list[Reading] = []
    lock = threading.Lock()

    def emit(batch: list[Reading]) -> None:
        with lock:
            readings.extend(batch)

    def seen(sensor: str, field: str) -> int:
        with lock:
            return sum(1 for r in readings if r.tags["sensor"] == sensor and field in r.fields)

    outside = I2c(name="outside", chip="bme280", interval=0.2)
    room = I2c(name="room", chip="sht3x", interval=0.2)
    assert outside.bus == room.bus, "one thread for the bus"
    sched = Scheduler([outside, room], emit)
    with sched.running():
        wait_for(lambda: seen("outside", "humidity") > 0 and seen("room", "humidity") > 0, 10, "both chips read")
        del bus.devices[0x76]  # its connector pulled
        wait_for(lambda: sched.states["outside"].errors > 0, 10, "the lost chip's error to be counted")
        assert sched.states["outside"].last_error == (
            "SensorError: BME280 at 0x76 on /dev/i2c-1: no answer while writing ctrl_hum (Remote I/O error): check the "
            "wiring and the address (i2cdetect -y 1)"
        )
        before = seen("room", "humidity")
        wait_for(lambda: seen("room", "humidity") > before, 10, "the other chip to be read on")
        bus.devices[0x76] = bme
        after = seen("outside", "humidity")
        wait_for(lambda: seen("outside", "humidity") > after, 30, "the chip to be read again after a reopen")


# -- options -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"chip": "bme280", "address": 0x44}, "address 0x44 is not one a BME280 answers on (0x76, 0x77)"),
        ({"chip": "sht4x", "address": 0x47}, "address 0x47 is not one an SHT4x answers on (0x44, 0x45, 0x46)"),
        ({"chip": "ads1115", "channels": ["a4"]}, "channel 'a4' is not an ADS1115 input"),
        ({"chip": "ads1115", "channels": ["a0", "a0"]}, "name an input twice"),
        ({"chip": "ads1115", "full_scale": 5.0}, "full_scale 5 V is not a PGA range"),
        ({"chip": "ads1115", "data_rate": 100}, "data_rate 100 is not one of the ADS1115's"),
        ({"chip": "sht3x", "channels": ["a0"]}, "channels is an ADS1115 option; an SHT3x has none"),
        ({"chip": "ads1115", "oversampling": 4}, "oversampling is a BME280/BMP280 option"),
        ({"chip": "bme280", "oversampling": 3}, "oversampling"),
        ({"chip": "bme680"}, "chip"),
        ({"chip": "bme280", "bus_number": -1}, "bus_number"),
    ],
)
def test_bad_options_are_refused_at_load(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        I2c(name="x", **options)


def test_defaults_units_and_the_bus_key() -> None:
    sensor = I2c(name="outside", chip="bme280")
    assert sensor.address == 0x76
    assert sensor.unit == {"temperature": "°C", "pressure": "hPa", "humidity": "%"}
    assert sensor.declared_fields() == sensor.dashboard_fields() == ["temperature", "pressure", "humidity"]
    assert sensor.measurement_name == "i2c"
    assert sensor.bus == "i2c:1"
    assert I2c(name="a", chip="ads1115", channels=["a2"]).declared_fields() == ["a2"]
    assert I2c(name="p", chip="bme280", unit={"pressure": "mbar"}).unit == {
        "temperature": "°C",
        "pressure": "mbar",
        "humidity": "%",
    }
    assert I2c(name="s", chip="sht3x", unit="K").unit == "K"


def test_nack_errnos_are_what_i2c_dev_raises() -> None:
    assert os.strerror(errno.EREMOTEIO) == "Remote I/O error"
    assert errno.EREMOTEIO in i2c.NACK_ERRNOS
