"""The onewire driver against w1 sysfs trees laid out as the kernel does (the hardware boundary): discovery,
CRC failures, the 85 °C power-on value, devices that vanish."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from fieldstation.reading import Reading
from fieldstation.scheduler import Scheduler
from fieldstation.sensor import SensorError, process
from fieldstation.sensors.onewire import Onewire, decode_w1_slave, discover
from harness.agent import wait_for

T0 = 1_700_000_000_000_000_000


def w1_slave(milli: int, crc_ok: bool = True) -> str:
    """The two lines w1_therm writes (the scratchpad bytes do not matter to the driver, the verdict does)."""
    verdict = "YES" if crc_ok else "NO"
    return f"72 01 4b 46 7f ff 0e 10 57 : crc=57 {verdict}\n72 01 4b 46 7f ff 0e 10 57 t={milli}\n"


def put(root: Path, dev_id: str, milli: int, crc_ok: bool = True) -> None:
    (root / dev_id).mkdir(parents=True, exist_ok=True)
    (root / dev_id / "w1_slave").write_text(w1_slave(milli, crc_ok))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "sys/bus/w1/devices"
    (r / "w1_bus_master1").mkdir(parents=True)
    (r / "w1_bus_master1" / "w1_master_slaves").write_text("")
    return r


def test_discovery_reads_every_temperature_family_and_nothing_else(root: Path) -> None:
    put(root, "28-0316a2790bff", 21500)
    put(root, "10-000802b4ad6e", 19000)
    put(root, "22-000000a1b2c3", -5250)
    put(root, "3b-0c98073d3f4a", 300250)
    (root / "2d-00000b2f5a10").mkdir()  # an EEPROM on the same bus
    (root / "2d-00000b2f5a10" / "eeprom").write_bytes(b"\0" * 16)
    sensor = Onewire(name="all", root=str(root))
    assert discover(root) == ["10-000802b4ad6e", "22-000000a1b2c3", "28-0316a2790bff", "3b-0c98073d3f4a"]
    assert sensor.read() == {
        "10-000802b4ad6e": 19.0,
        "22-000000a1b2c3": -5.25,
        "28-0316a2790bff": 21.5,
        "3b-0c98073d3f4a": 300.25,
    }
    lines = [r.to_line() for r in process(sensor, sensor.read(), T0).readings]
    assert lines == [
        "onewire,sensor=all,unit=°C 10-000802b4ad6e=19.0,22-000000a1b2c3=-5.25,28-0316a2790bff=21.5,"
        "3b-0c98073d3f4a=300.25 1700000000000000000"
    ]


def test_a_sensor_plugged_in_later_is_found_on_the_next_read(root: Path) -> None:
    put(root, "28-0316a2790bff", 21500)
    sensor = Onewire(name="all", root=str(root))
    assert list(sensor.read()) == ["28-0316a2790bff"]
    put(root, "28-01193a7f5c2a", 4000)
    assert sensor.read() == {"28-01193a7f5c2a": 4.0, "28-0316a2790bff": 21.5}


def test_id_picks_one_device_into_the_field_temperature(root: Path) -> None:
    put(root, "28-0316a2790bff", 21500)
    put(root, "28-01193a7f5c2a", 4000)
    sensor = Onewire(name="boiler", root=str(root), id="28-01193A7F5C2A")
    assert sensor.id == "28-01193a7f5c2a"
    assert sensor.read() == {"temperature": 4.0}
    assert sensor.declared_fields() == ["temperature"]


def test_temperature_file_is_read_when_there_is_no_w1_slave(root: Path) -> None:
    (root / "28-0316a2790bff").mkdir()
    (root / "28-0316a2790bff" / "temperature").write_text("-1062\n")
    assert Onewire(name="t", root=str(root), id="28-0316a2790bff").read() == {"temperature": -1.062}


def test_crc_failure_fails_the_read_naming_the_device_and_the_next_good_read_passes(root: Path) -> None:
    put(root, "28-0316a2790bff", 21500)
    put(root, "28-01193a7f5c2a", 4000, crc_ok=False)
    sensor = Onewire(name="all", root=str(root))
    with pytest.raises(SensorError) as exc:
        sensor.read()
    assert str(exc.value) == "1-Wire 28-01193a7f5c2a: CRC error (crc=57 NO): noise on the line or a loose contact"
    assert "\n" not in str(exc.value)
    assert exc.value.reopen is False  # the bus is there: poll again at the interval, no reconnect backoff
    put(root, "28-01193a7f5c2a", 4125)
    assert sensor.read() == {"28-01193a7f5c2a": 4.125, "28-0316a2790bff": 21.5}


def test_85_degrees_is_an_error_before_any_good_read_and_after_a_jump(root: Path) -> None:
    put(root, "28-0316a2790bff", 85000)
    sensor = Onewire(name="boiler", root=str(root), id="28-0316a2790bff")
    with pytest.raises(SensorError, match="85 °C power-on value"):
        sensor.read()
    put(root, "28-0316a2790bff", 21000)
    assert sensor.read() == {"temperature": 21.0}
    put(root, "28-0316a2790bff", 85000)  # from 21 °C in one interval: the device reset
    with pytest.raises(SensorError, match="85 °C power-on value"):
        sensor.read()
    put(root, "28-0316a2790bff", 84500)
    assert sensor.read() == {"temperature": 84.5}
    put(root, "28-0316a2790bff", 85000)  # a boiler really at 85 °C, reached gradually
    assert sensor.read() == {"temperature": 85.0}


def test_a_device_gone_from_the_bus_and_an_empty_bus_are_one_line_errors(root: Path) -> None:
    with pytest.raises(SensorError) as exc:
        Onewire(name="all", root=str(root)).read()
    assert str(exc.value) == f"no 1-Wire temperature sensor under {root} (is dtoverlay=w1-gpio set and the sensor wired?)"
    with pytest.raises(SensorError) as exc:
        Onewire(name="b", root=str(root), id="28-0316a2790bff").read()
    assert str(exc.value) == "1-Wire 28-0316a2790bff: not on the bus (no w1_slave or temperature file)"
    with pytest.raises(SensorError, match="no 1-Wire temperature sensor under /nonexistent"):
        Onewire(name="all", root="/nonexistent").read()


def test_garbage_in_w1_slave_is_an_error_not_a_value(root: Path) -> None:
    (root / "28-0316a2790bff").mkdir()
    (root / "28-0316a2790bff" / "w1_slave").write_text("")
    with pytest.raises(SensorError, match="w1_slave holds no CRC verdict"):
        Onewire(name="b", root=str(root), id="28-0316a2790bff").read()
    (root / "28-0316a2790bff" / "w1_slave").write_text(
        "00 00 00 00 00 00 00 00 00 : crc=00 YES\n00 00 00 00 00 00 00 00 00 t=0\n"
    )
    with pytest.raises(SensorError, match="scratchpad reads all zeros: the data line is shorted to ground"):
        Onewire(name="b", root=str(root), id="28-0316a2790bff").read()
    with pytest.raises(ValueError, match="no temperature"):
        decode_w1_slave("72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n")


@pytest.mark.parametrize(
    ("id_", "problem"),
    [
        ("28-0316a279", "must look like 28-0316a2790bff"),
        ("0316a2790bff", "must look like 28-0316a2790bff"),
        ("2d-00000b2f5a10", "family 2d is not a temperature sensor"),
    ],
)
def test_a_malformed_id_is_refused_at_load(id_: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        Onewire(name="b", id=id_)


def test_sensors_of_one_bus_share_one_thread_and_the_root_defaults_to_the_kernels(root: Path) -> None:
    a, b = Onewire(name="a"), Onewire(name="b", id="28-0316a2790bff")
    assert a.root == "/sys/bus/w1/devices"
    assert a.bus == b.bus  # one conversion at a time on the master
    assert Onewire(name="c", root=str(root)).bus != a.bus


def test_the_scheduler_reads_the_bus_and_counts_a_crc_error(root: Path) -> None:
    put(root, "28-0316a2790bff", 21500)
    readings: list[Reading] = []
    lock = threading.Lock()

    def emit(batch: list[Reading]) -> None:
        with lock:
            readings.extend(batch)

    def temps() -> list[object]:
        with lock:
            return [r.fields.get("temperature") for r in readings]

    sched = Scheduler([Onewire(name="boiler", id="28-0316a2790bff", root=str(root), interval=0.2)], emit)
    with sched.running():
        wait_for(lambda: 21.5 in temps(), 10, "a first reading")
        put(root, "28-0316a2790bff", 22000, crc_ok=False)
        wait_for(lambda: sched.states["boiler"].errors > 0, 10, "the CRC error to be counted")
        assert sched.states["boiler"].last_error == (
            "SensorError: 1-Wire 28-0316a2790bff: CRC error (crc=57 NO): noise on the line or a loose contact"
        )
        put(root, "28-0316a2790bff", 22500)
        wait_for(lambda: 22.5 in temps(), 10, "reads to resume")
    assert 22.0 not in temps()
