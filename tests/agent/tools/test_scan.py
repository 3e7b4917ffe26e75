"""``fieldstation scan``: sysfs and /dev laid out as the kernel and udev do (tmp trees, the hardware boundary), I²C
through a bus object at smbus2's boundary, a real upsd with dummy-ups and a real mosquitto with a publisher playing
Tasmota and Shelly devices. Each snippet scan prints is checked to build the real driver class it names."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

import pytest

from fieldstation.cli import main
from fieldstation.tools import scan
from harness.mosquitto import Mosquitto
from harness.nut import Upsd

FTDI = "devices/pci0000:00/0000:00:14.0/usb1/1-1"
ACM = "devices/pci0000:00/0000:00:14.0/usb1/1-2"
PL011 = "devices/platform/soc/fe201000.serial"
PLACEHOLDER = "devices/platform/serial8250/serial8250:0/serial8250:0.1"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def link(path: Path, target: Path | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def tty(sys_root: Path, name: str, device: str | None, driver: str | None, type_: str | None = None) -> None:
    """/sys/class/tty/<name> → the tty's directory under its device, with `device` and the device's `driver`."""
    parent = sys_root / (device or "devices/virtual/tty")
    node = parent / "tty" / name
    node.mkdir(parents=True)
    if device is not None:
        link(node / "device", parent)
    if driver is not None:
        drv = sys_root / "bus/drivers" / driver
        drv.mkdir(parents=True, exist_ok=True)
        link(parent / "driver", drv)
    if type_ is not None:
        write(node / "type", type_)
    link(sys_root / "class/tty" / name, node)


def usb(sys_root: Path, device: str, vid: str, pid: str, **strings: str) -> None:
    write(sys_root / device / "idVendor", vid)
    write(sys_root / device / "idProduct", pid)
    for key, value in strings.items():
        write(sys_root / device / key, value)
    write(sys_root / "devices/pci0000:00/0000:00:14.0/usb1/idVendor", "1d6b")  # the root hub: not the adapter


@pytest.fixture
def station(tmp_path: Path) -> tuple[Path, Path]:
    """A Pi 4's sysfs and /dev: an FTDI USB-RS485 cable, an Arduino on ttyACM0, the PL011 UART as serial0, an
    8250 placeholder port, a virtual console, two DS18B20 and a non-temperature 1-Wire device, and I2C bus 1."""
    sys_root, dev = tmp_path / "sys", tmp_path / "dev"
    usb(sys_root, FTDI, "0403", "6001", manufacturer="FTDI", product="FT232R USB UART", serial="A10KD7Q3")
    tty(sys_root, "ttyUSB0", f"{FTDI}/1-1:1.0/ttyUSB0", "ftdi_sio")
    usb(sys_root, ACM, "2341", "0043", manufacturer="Arduino (www.arduino.cc)")
    tty(sys_root, "ttyACM0", f"{ACM}/1-2:1.0", "cdc_acm")
    tty(sys_root, "ttyAMA0", PL011, "uart-pl011", "91")
    tty(sys_root, "ttyS1", PLACEHOLDER, "port", "0")
    tty(sys_root, "tty1", None, None)
    link(dev / "serial0", "ttyAMA0")
    link(dev / "serial/by-id/usb-FTDI_FT232R_USB_UART_A10KD7Q3-if00-port0", "../../ttyUSB0")
    w1 = sys_root / "bus/w1/devices"
    for dev_id in ("28-0316a2790bff", "28-3c01d607e4aa", "01-000012345678", "w1_bus_master1"):
        (w1 / dev_id).mkdir(parents=True)
    write(dev / "i2c-1", "")
    return sys_root, dev


class FakeBus:
    """smbus2.SMBus's read_byte as the kernel answers it: a byte where a chip is, ENXIO (NACK) elsewhere."""

    def __init__(self, present: dict[int, int], errors: dict[int, int] | None = None) -> None:
        self.present = present
        self.errors = errors or {}
        self.read: list[int] = []
        self.closed = False

    def read_byte(self, i2c_addr: int) -> int:
        self.read.append(i2c_addr)
        if i2c_addr in self.errors:
            raise OSError(self.errors[i2c_addr], os.strerror(self.errors[i2c_addr]))
        if i2c_addr not in self.present:
            raise OSError(errno.ENXIO, os.strerror(errno.ENXIO))
        return self.present[i2c_addr]

    def close(self) -> None:
        self.closed = True


def build(snippet: str) -> Any:
    """The sensor a snippet makes, with the real driver classes (what config.py would do)."""
    from fieldstation.sensors.i2c import I2c
    from fieldstation.sensors.modbus import Modbus
    from fieldstation.sensors.mqtt import Mqtt
    from fieldstation.sensors.nut import Nut
    from fieldstation.sensors.onewire import Onewire

    code = snippet.split("  #", 1)[0].rstrip().rstrip(",")
    classes = {"I2c": I2c, "Modbus": Modbus, "Mqtt": Mqtt, "Nut": Nut, "Onewire": Onewire}
    return eval(code, {"__builtins__": {}}, classes)  # our own snippet; only the classes in scope


def test_serial_ports_with_usb_ids_the_gpio_uart_and_no_placeholders(station: tuple[Path, Path]) -> None:
    sys_root, dev = station
    section = scan.scan_serial(sys_root, dev)
    by_port = {f.what.split(":")[0]: f for f in section.findings}
    assert sorted(by_port) == ["/dev/ttyACM0", "/dev/ttyAMA0", "/dev/ttyUSB0"]  # no ttyS1, no tty1
    ftdi = by_port["/dev/ttyUSB0"]
    assert "USB 0403:6001 FTDI FT232R USB UART, serial A10KD7Q3" in ftdi.what
    assert any("USB-RS485" in n for n in ftdi.notes)
    sensor = build(ftdi.snippet)
    assert sensor.port == "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10KD7Q3-if00-port0"
    assert "USB 2341:0043 Arduino (www.arduino.cc)" in by_port["/dev/ttyACM0"].what
    assert any("Arduino Uno" in n for n in by_port["/dev/ttyACM0"].notes)
    uart = by_port["/dev/ttyAMA0"]
    assert "/dev/serial0" in uart.what and any("base_pi_uart_rs485" in n for n in uart.notes)
    assert build(uart.snippet).port == "/dev/serial0"


def test_onewire_lists_the_temperature_sensors_only(station: tuple[Path, Path]) -> None:
    sys_root, _ = station
    section = scan.scan_onewire(sys_root)
    ids = [build(f.snippet).id for f in section.findings]
    assert ids == ["28-0316a2790bff", "28-3c01d607e4aa"]
    assert "DS18B20" in section.findings[0].what


def test_no_1_wire_bus_and_no_i2c_bus_say_how_to_enable_them(tmp_path: Path) -> None:
    assert "base_pi_onewire_gpio" in scan.scan_onewire(tmp_path).problems[0]
    assert "base_pi_i2c" in scan.scan_i2c(tmp_path, lambda path: FakeBus({})).problems[0]


def test_i2c_addresses_answering_with_the_likely_chip(station: tuple[Path, Path]) -> None:
    _, dev = station
    bus = FakeBus({0x76: 0x00, 0x44: 0xFF, 0x48: 0x85, 0x20: 0x00}, errors={0x3C: errno.EBUSY})
    opened: list[Path] = []

    def open_bus(path: Path) -> FakeBus:
        opened.append(path)
        return bus

    section = scan.scan_i2c(dev, open_bus)
    assert opened == [dev / "i2c-1"] and bus.closed
    assert bus.read == list(range(0x03, 0x78))
    found = {f.what.split(": ", 1)[0]: f for f in section.findings}
    assert sorted(found) == [f"/dev/i2c-1 0x{a:02x}" for a in (0x20, 0x3C, 0x44, 0x48, 0x76)]
    assert "likely BME280 or BMP280" in found["/dev/i2c-1 0x76"].what
    bme = build(found["/dev/i2c-1 0x76"].snippet)
    assert (bme.chip, bme.bus_number, bme.address) == ("bme280", 1, 0x76)
    assert build(found["/dev/i2c-1 0x44"].snippet).chip == "sht3x"
    assert found["/dev/i2c-1 0x44"].notes == ["or chip='sht4x'"]
    assert build(found["/dev/i2c-1 0x48"].snippet).chip == "ads1115"
    assert found["/dev/i2c-1 0x20"].snippet.startswith("#")  # unknown: no made-up driver


def test_an_i2c_bus_that_cannot_be_opened_is_one_line(station: tuple[Path, Path]) -> None:
    _, dev = station

    def denied(path: Path) -> FakeBus:
        raise PermissionError(errno.EACCES, "Permission denied")

    assert scan.scan_i2c(dev, denied).problems == ["/dev/i2c-1: cannot open (Permission denied)"]


def test_nut_lists_the_upses_of_upsd(upsd: Upsd) -> None:
    section = scan.scan_nut("127.0.0.1", upsd.port)
    assert [f.what for f in section.findings] == [f"dummy: Simulated UPS at 127.0.0.1:{upsd.port}"]
    sensor = build(section.findings[0].snippet)
    assert (sensor.ups, sensor.host, sensor.port) == ("dummy", "127.0.0.1", upsd.port)


def test_no_upsd_is_one_line(tmp_path: Path) -> None:
    from fieldstation.influxd import free_port

    port = free_port()
    problems = scan.scan_nut("127.0.0.1", port).problems
    assert len(problems) == 1 and problems[0].startswith(f"upsd at 127.0.0.1:{port}: ")


TASMOTA_SENSOR = ('{"Time":"2026-03-01T10:00:00","ENERGY":{"Total":12.5,"Power":42,"Voltage":231}}')
TASMOTA_STATE = '{"Time":"2026-03-01T10:00:00","Uptime":"0T01:00:00","POWER":"ON","Wifi":{"RSSI":80}}'
SHELLY_SWITCH = '{"id":0,"output":true,"apower":12.3,"voltage":230.1,"aenergy":{"total":100.5}}'


def test_mqtt_topics_with_tasmota_and_shelly_recognised(mosquitto: Mosquitto) -> None:
    mosquitto.publish("tele/plug1/SENSOR", TASMOTA_SENSOR, retain=True)
    mosquitto.publish("tele/plug1/STATE", TASMOTA_STATE, retain=True)
    mosquitto.publish("shelly-plus-1pm/status/switch:0", SHELLY_SWITCH, retain=True)
    mosquitto.publish("zigbee2mqtt/kitchen", '{"temperature":21.5,"humidity":40,"battery":{"level":90}}', retain=True)
    mosquitto.publish("shellies/shelly1-ab/relay/0/power", "12.5", retain=True)
    section = scan.scan_mqtt("127.0.0.1", mosquitto.port, 1.0)
    assert section.problems == []
    found = {f.what.split(" ", 1)[0]: f for f in section.findings}
    assert sorted(found) == ["shellies/shelly1-ab/relay/0/power", "shelly-plus-1pm/status/switch:0",
                             "tele/plug1/SENSOR", "tele/plug1/STATE", "zigbee2mqtt/kitchen"]
    sensors = {topic: build(f.snippet) for topic, f in found.items()}
    assert sensors["tele/plug1/SENSOR"].mapping == "tasmota_sensor"
    assert sensors["tele/plug1/STATE"].mapping == "tasmota_state"
    assert sensors["shelly-plus-1pm/status/switch:0"].mapping == "shelly"
    assert "(Tasmota SENSOR)" in found["tele/plug1/SENSOR"].what and '"Power":42' in found["tele/plug1/SENSOR"].what
    z2m = sensors["zigbee2mqtt/kitchen"]
    assert z2m.mapping is None
    assert z2m.fields == {"temperature": "temperature", "humidity": "humidity", "level": "battery.level"}
    # Each suggestion decodes its own sample payload with the real driver.
    assert z2m.decode(b'{"temperature":21.5,"humidity":40,"battery":{"level":90}}')[0]["level"] == 90
    assert sensors["shellies/shelly1-ab/relay/0/power"].decode(b"12.5")[0] == {"value": 12.5}
    for sensor in sensors.values():
        assert (sensor.broker, sensor.port) == ("127.0.0.1", mosquitto.port)


def test_mqtt_broker_not_answering_is_one_line() -> None:
    from fieldstation.influxd import free_port

    port = free_port()
    problems = scan.scan_mqtt("127.0.0.1", port, 0.5).problems
    assert len(problems) == 1 and problems[0].startswith(f"MQTT broker 127.0.0.1:{port}: ")


@pytest.mark.parametrize("text, error", [
    ("", "expected HOST or HOST:PORT"),
    ("host:port", "expected HOST or HOST:PORT"),
    ("host:0", "port 0 is not in 1-65535"),
    ("host:70000", "port 70000 is not in 1-65535"),
])
def test_a_bad_mqtt_broker_is_refused_naming_it(text: str, error: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "--no-nut", "--mqtt", text]) != 0
    err = capsys.readouterr().err
    assert f"--mqtt {text!r}" in err and error in err


def test_parse_broker() -> None:
    assert scan.parse_broker("broker.lan") == ("broker.lan", 1883)
    assert scan.parse_broker("10.0.0.5:1884") == ("10.0.0.5", 1884)
    assert scan.parse_broker("[fd00::1]:8883") == ("fd00::1", 8883)


def test_the_command_prints_every_section_and_the_imports(station: tuple[Path, Path], upsd: Upsd,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    sys_root, dev = station
    rc = main(["scan", "--sys", str(sys_root), "--dev", str(dev), "--nut-port", str(upsd.port)])
    out = capsys.readouterr().out
    assert rc == 0
    titles = re.findall(r"^== (.*?):", out, flags=re.M)
    assert titles == ["Serial ports", "1-Wire sensors", "I2C buses", "UPSes (NUT)"]
    assert "from fieldstation.sensors.onewire import Onewire" in out
    assert "from fieldstation.sensors.nut import Nut" in out
    # The tree's i2c-1 is a plain file: the real smbus2 opens that path and its first ioctl is refused, in one line.
    assert "  - /dev/i2c-1: cannot open (Inappropriate ioctl for device)\n" in out
