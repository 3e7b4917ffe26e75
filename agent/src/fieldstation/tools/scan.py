"""``fieldstation scan``: what the station can see, each finding with a ready ``config.py`` snippet.

Serial ports (sysfs ``/sys/class/tty/*/device``, with the USB ids of an adapter), 1-Wire temperature sensors (the
onewire driver's own discovery), I²C addresses answering on each ``/dev/i2c-N`` (smbus2 ``read_byte``, the likely chip
from a table), the UPSes of the local upsd (NUT's LIST UPS) and, with ``--mqtt``, the topics a broker carries for a
few seconds (Tasmota and Shelly recognised from the topic's shape). The snippets use the drivers' own field names.

Every probe reads only: serial ports are not opened, an I²C address is read one byte (as ``i2cdetect -r`` does), the
MQTT client only subscribes. The sysfs and /dev roots and the I²C bus opener are parameters (tests lay out trees as the
kernel does and hand in a bus object at smbus2's boundary).
"""

from __future__ import annotations

import errno
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

#: 7-bit address → the chips the i2c driver reads that answer there (the `chip` values of sensors/i2c.py).
I2C_CHIPS: dict[int, tuple[str, ...]] = {
    0x76: ("bme280", "bmp280"),
    0x77: ("bme280", "bmp280"),
    0x44: ("sht3x", "sht4x"),
    0x45: ("sht3x", "sht4x"),
    0x48: ("ads1115",),
    0x49: ("ads1115",),
    0x4A: ("ads1115",),
    0x4B: ("ads1115",),
}
#: The addresses i2cdetect scans by default: 0x00-0x02 and 0x78-0x7f are reserved.
I2C_ADDRESSES = range(0x03, 0x78)
#: errno values of an address nobody answers (the adapter's NACK).
I2C_ABSENT = {errno.EREMOTEIO, errno.ENXIO, errno.EIO, errno.ETIMEDOUT}

#: USB vendor:product → what the adapter usually is (the ids a Pi station meets on RS-485 and Arduino boards).
USB_SERIAL: dict[str, str] = {
    "0403:6001": "FTDI FT232R (USB-RS485 cables, e.g. Waveshare, DSD TECH)",
    "0403:6015": "FTDI FT230X/FT231X (USB-RS485 adapters)",
    "1a86:7523": "WCH CH340 (cheap USB-RS485 sticks)",
    "1a86:55d3": "WCH CH343 (USB-RS485 adapters)",
    "10c4:ea60": "Silicon Labs CP210x (USB-RS485 adapters)",
    "067b:2303": "Prolific PL2303",
    "2341:0043": "Arduino Uno",
    "2341:0042": "Arduino Mega 2560",
}


class Bus(Protocol):
    """What scan needs of smbus2.SMBus."""

    def read_byte(self, i2c_addr: int) -> int: ...

    def close(self) -> None: ...


@dataclass
class Finding:
    kind: str           # serial, onewire, i2c, nut, mqtt
    what: str           # one line: the device
    snippet: str        # a config.py entry
    notes: list[str] = field(default_factory=list)


@dataclass
class Section:
    title: str
    findings: list[Finding] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # one line each: what could not be looked at, and why


# -- serial ----------------------------------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _usb_parent(device: Path) -> Path | None:
    """The USB device directory (the one with idVendor) above a tty's device, if it is on USB."""
    for parent in [device, *device.parents]:
        if (parent / "idVendor").is_file():
            return parent
        if parent.name in ("devices", "platform") or parent == parent.parent:
            break  # the top of /sys/devices: not on USB
    return None


def _by_id(dev: Path, name: str) -> str | None:
    """The /dev/serial/by-id link to /dev/<name> (stable across reboots and plugging order), if udev made one."""
    by_id = dev / "serial" / "by-id"
    try:
        links = sorted(by_id.iterdir())
    except OSError:
        return None
    for link in links:
        if _link_name(link) == name:
            return str(Path("/dev/serial/by-id") / link.name)
    return None


def _link_name(link: Path) -> str | None:
    try:
        return Path(link.readlink()).name
    except OSError:
        return None


def scan_serial(sys_root: Path = Path("/sys"), dev_root: Path = Path("/dev")) -> Section:
    section = Section("Serial ports")
    ttys = sys_root / "class" / "tty"
    try:
        names = sorted(p.name for p in ttys.iterdir())
    except OSError as exc:
        section.problems.append(f"{ttys}: cannot list ({exc.strerror or exc})")
        return section
    for name in names:
        device = ttys / name / "device"
        if not device.exists():
            continue  # virtual terminals, ptys
        real = device.resolve()
        driver = (device / "driver").resolve().name if (device / "driver").exists() else ""
        if driver == "serial8250" or _read(ttys / name / "type") == "0":
            continue  # the 8250 driver's placeholder ports (serial_core's PORT_UNKNOWN): no UART behind them
        usb = _usb_parent(real)
        port = _by_id(dev_root, name) or f"/dev/{name}"
        notes: list[str] = []
        if usb is not None:
            vid, pid = _read(usb / "idVendor") or "?", _read(usb / "idProduct") or "?"
            ids = f"{vid}:{pid}"
            label = " ".join(x for x in (_read(usb / "manufacturer"), _read(usb / "product")) if x)
            serial = _read(usb / "serial")
            what = f"/dev/{name}: USB {ids} {label or '(no product string)'}" + (f", serial {serial}" if serial else "")
            if ids in USB_SERIAL:
                notes.append(f"likely {USB_SERIAL[ids]}")
        elif _link_name(dev_root / "serial0") == name:
            what = f"/dev/{name}: the GPIO header's UART (/dev/serial0, {driver or 'no driver'})"
            notes.append("for an RS-485 HAT: base_pi_uart_rs485: true in the inventory (console off the UART)")
            port = "/dev/serial0"
        else:
            what = f"/dev/{name}: a built-in serial port (driver {driver or 'none'})"
        snippet = (
            f'Modbus(name="meter_{_ident(name)}", model="eastron_sdm120", port="{port}", device_id=1),'
            "  # the meter's model and Modbus address"
        )
        section.findings.append(Finding("serial", what, snippet, notes))
    return section


# -- 1-Wire ----------------------------------------------------------------------------------------------------


def scan_onewire(sys_root: Path = Path("/sys")) -> Section:
    from fieldstation.sensors.onewire import FAMILIES, discover

    section = Section("1-Wire sensors")
    root = sys_root / "bus" / "w1" / "devices"
    if not root.is_dir():
        section.problems.append(f"{root}: no 1-Wire bus (base_pi_onewire_gpio: 4 in the inventory enables one)")
        return section
    for dev_id in discover(root):
        family = FAMILIES.get(dev_id[:2], "?")
        snippet = f'Onewire(name="t_{dev_id[3:]}", id="{dev_id}"),'
        section.findings.append(Finding("onewire", f"{dev_id}: {family}", snippet))
    return section


# -- I2C -------------------------------------------------------------------------------------------------------


def _smbus(path: Path) -> Bus:
    from smbus2 import SMBus

    bus: Bus = SMBus(str(path))  # smbus2 opens a path as it opens a bus number
    return bus


def scan_i2c(dev_root: Path = Path("/dev"), open_bus: Callable[[Path], Bus] = _smbus) -> Section:
    section = Section("I2C buses")
    numbers = sorted(int(p.name[4:]) for p in dev_root.glob("i2c-*") if p.name[4:].isdigit())
    if not numbers:
        section.problems.append(f"{dev_root}/i2c-*: no I2C bus (base_pi_i2c: true in the inventory enables one)")
        return section
    for number in numbers:
        try:
            bus = open_bus(dev_root / f"i2c-{number}")
        except ModuleNotFoundError:
            section.problems.append("I2C: smbus2 is not installed (pip install 'fieldstation[i2c]')")
            return section
        except OSError as exc:
            section.problems.append(f"/dev/i2c-{number}: cannot open ({exc.strerror or exc})")
            continue
        try:
            answering = list(_answering(bus, number, section))
        finally:
            bus.close()
        if not answering:
            section.problems.append(f"/dev/i2c-{number}: no device answers")
        for address in answering:
            chips = I2C_CHIPS.get(address, ())
            what = f"/dev/i2c-{number} 0x{address:02x}: " + (
                f"likely {' or '.join(c.upper() for c in chips)}" if chips else "a device the i2c driver does not know"
            )
            if chips:
                snippet = (
                    f'I2c(name="{chips[0]}_{number}_{address:02x}", chip="{chips[0]}", bus_number={number}, '
                    f"address=0x{address:02x}),"
                )
                notes = [f"or chip={c!r}" for c in chips[1:]]
            else:
                snippet = f"# 0x{address:02x} on bus {number}: no driver; a Sensor subclass of your own (README)"
                notes = []
            section.findings.append(Finding("i2c", what, snippet, notes))
    return section


def _answering(bus: Bus, number: int, section: Section) -> Iterator[int]:
    for address in I2C_ADDRESSES:
        try:
            bus.read_byte(address)
        except OSError as exc:
            if exc.errno in I2C_ABSENT:
                continue
            if exc.errno == errno.EBUSY:  # a kernel driver holds the address: someone is there
                yield address
                continue
            section.problems.append(f"/dev/i2c-{number} 0x{address:02x}: {exc.strerror or exc}; the scan stopped")
            return
        yield address


# -- NUT -------------------------------------------------------------------------------------------------------


def scan_nut(host: str = "127.0.0.1", port: int | None = None) -> Section:
    from fieldstation.nut_client import DEFAULT_PORT, NutClient, NutError

    section = Section("UPSes (NUT)")
    port = port or DEFAULT_PORT
    try:
        with NutClient(host, port, timeout=5.0) as client:
            upses = client.list_ups()
    except (NutError, OSError) as exc:
        section.problems.append(f"upsd at {host}:{port}: {exc} (the nut role sets it up)")
        return section
    for ups, description in sorted(upses.items()):
        where = "" if (host, port) == ("127.0.0.1", DEFAULT_PORT) else f', host="{host}", port={port}'
        snippet = f'Nut(name="ups_{_ident(ups)}", ups="{ups}"{where}),'
        section.findings.append(Finding("nut", f"{ups}: {description or '(no description)'} at {host}:{port}", snippet))
    return section


# -- MQTT ------------------------------------------------------------------------------------------------------

TASMOTA = re.compile(r"^tele/(?P<device>[^/]+)/(?P<kind>SENSOR|STATE)$")
SHELLY = re.compile(r"^(?P<device>[^/]+)/status/(?P<component>[a-z0-9]+:\d+)$")
#: JSON leaves a suggested `fields` mapping names, at most.
MAX_FIELDS = 8


def _leaves(doc: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(doc, (int, float)) and not isinstance(doc, bool):
        yield prefix, doc


def suggest_mqtt(topic: str, payload: bytes, broker: str, port: int) -> Finding:
    """The mqtt sensor for one topic and a sample of its payload."""
    text = payload.decode("utf-8", errors="replace")
    sample = text if len(text) <= 120 else text[:117] + "..."
    where = f', broker="{broker}"' + ("" if port == 1883 else f", port={port}")
    m = TASMOTA.match(topic)
    s = SHELLY.match(topic)
    if m:
        mapping, device, kind = f"tasmota_{m['kind'].lower()}", m["device"], f"Tasmota {m['kind']}"
        snippet = f'Mqtt(name="{_ident(device)}_{m["kind"].lower()}", topic="{topic}", mapping="{mapping}"{where}),'
    elif s:
        device, kind = s["device"], f"Shelly {s['component']}"
        snippet = f'Mqtt(name="{_ident(device)}_{_ident(s["component"])}", topic="{topic}", mapping="shelly"{where}),'
    else:
        kind = "plain"
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        name = _ident(topic)
        if isinstance(doc, dict):
            kind = "JSON"
            leaves = [path for path, _ in _leaves(doc)][:MAX_FIELDS]
            if not leaves:
                return Finding("mqtt", f"{topic}: {sample}", f"# {topic}: JSON without numbers", [])
            fields = ", ".join(f'"{_ident(p.rsplit(".", 1)[-1])}": "{p}"' for p in leaves)
            snippet = f'Mqtt(name="{name}", topic="{topic}", fields={{{fields}}}{where}),'
        else:
            snippet = f'Mqtt(name="{name}", topic="{topic}"{where}),'
    return Finding("mqtt", f"{topic} ({kind}): {sample}", snippet)


def scan_mqtt(broker: str, port: int, seconds: float) -> Section:
    """Subscribes to ``#`` for ``seconds`` (retained messages arrive at once) and suggests a sensor per topic."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    section = Section(f"MQTT topics on {broker}:{port} ({seconds:g} s)")
    seen: dict[str, bytes] = {}
    lock = threading.Lock()
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        else:
            client.subscribe("#")
        connected.set()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        if msg.topic.startswith("$"):
            return
        with lock:
            seen.setdefault(msg.topic, msg.payload)

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"fieldstation-scan-{time.monotonic_ns()}")
    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(broker, port, keepalive=30)
    except OSError as exc:
        section.problems.append(f"MQTT broker {broker}:{port}: {exc.strerror or exc}")
        return section
    client.loop_start()
    try:
        if not connected.wait(10):
            section.problems.append(f"MQTT broker {broker}:{port}: no CONNACK within 10 s")
            return section
        if refused:
            section.problems.append(f"MQTT broker {broker}:{port} refused the connection: {refused[0]}")
            return section
        time.sleep(seconds)
    finally:
        client.disconnect()
        client.loop_stop()
        client._reset_sockets()  # loop_start()'s socket pair, else left to Client.__del__ (paho-mqtt 2.2)
    with lock:
        topics = dict(seen)
    if not topics:
        section.problems.append(f"MQTT broker {broker}:{port}: no message in {seconds:g} s")
    for topic in sorted(topics):
        section.findings.append(suggest_mqtt(topic, topics[topic], broker, port))
    return section


def parse_broker(text: str) -> tuple[str, int]:
    """``HOST[:PORT]`` (``[v6]:PORT`` for an IPv6 address) → (host, port); a one-line error naming the input."""
    m = re.fullmatch(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\s\[\]]+))(?::(?P<port>\d+))?", text.strip())
    if m is None:
        raise ValueError(f"--mqtt {text!r}: expected HOST or HOST:PORT (e.g. 192.168.1.10:1883)")
    port = int(m["port"]) if m["port"] else 1883
    if not 1 <= port <= 65535:
        raise ValueError(f"--mqtt {text!r}: port {port} is not in 1-65535")
    return m["v6"] or m["host"], port


# -- output ----------------------------------------------------------------------------------------------------


def _ident(text: str) -> str:
    """A sensor name from a device name or topic (the `name` pattern: letters, digits, _ . : -)."""
    return re.sub(r"[^A-Za-z0-9_.:-]+", "_", text).strip("_") or "sensor"


IMPORTS = {
    "serial": "from fieldstation.sensors.modbus import Modbus",
    "onewire": "from fieldstation.sensors.onewire import Onewire",
    "i2c": "from fieldstation.sensors.i2c import I2c",
    "nut": "from fieldstation.sensors.nut import Nut",
    "mqtt": "from fieldstation.sensors.mqtt import Mqtt",
}


def render(sections: list[Section]) -> str:
    out: list[str] = []
    kinds: list[str] = []
    for section in sections:
        out.append(f"== {section.title}: {len(section.findings)} found")
        for finding in section.findings:
            out.append(f"  {finding.what}")
            out.extend(f"    {note}" for note in finding.notes)
            out.append(f"    {finding.snippet}")
            if finding.kind not in kinds:
                kinds.append(finding.kind)
        out.extend(f"  - {problem}" for problem in section.problems)
    if kinds:
        out.append("")
        out.append("# config.py: these imports, and the lines above inside a group of `sensors`")
        out.extend(IMPORTS[k] for k in kinds)
    return "\n".join(out) + "\n"


def scan(
    *,
    sys_root: Path = Path("/sys"),
    dev_root: Path = Path("/dev"),
    open_bus: Callable[[Path], Bus] = _smbus,
    nut: tuple[str, int | None] | None = ("127.0.0.1", None),
    mqtt: tuple[str, int] | None = None,
    seconds: float = 5.0,
) -> list[Section]:
    sections = [scan_serial(sys_root, dev_root), scan_onewire(sys_root), scan_i2c(dev_root, open_bus)]
    if nut is not None:
        sections.append(scan_nut(*nut))
    if mqtt is not None:
        try:
            sections.append(scan_mqtt(*mqtt, seconds))
        except ModuleNotFoundError:
            sections.append(Section("MQTT topics", problems=["MQTT: paho-mqtt is not installed "
                                                             "(pip install 'fieldstation[mqtt]')"]))
    return sections
