# Fieldstation sensor configuration: plain Python.
#
# Copy to /etc/fieldstation/config.py (Ansible does, from the path the inventory names) and edit.
# Try it with:      fieldstation check /etc/fieldstation/config.py
#                   fieldstation once -n 5 --timing /etc/fieldstation/config.py
#
# `sensors` maps a dashboard group (one Grafana row each) to its sensors. Every sensor takes:
#   name (unique, the `sensor` tag), description, unit (or {field: unit}), interval (s, >= 0.1),
#   timeout, precision (decimals kept), valid_range=(low, high) with out_of_range="drop" or "flag",
#   conversion (Linear, Polynomial, PowerOfTen, or {field: conversion}), stale_after (intervals),
#   tags, limits={field: (low, high)} for alerts.
# Everything about the host (drives, database, Grafana, mail, UPS, backups) lives in the Ansible inventory.

import os
from typing import Literal

from fieldstation import Linear, Polynomial, PowerOfTen, Sensor
from fieldstation.sensors.arduino import Arduino
from fieldstation.sensors.http_json import HttpJson
from fieldstation.sensors.pi import Pi
from fieldstation.sensors.simulated import Simulated

# Hardware drivers: uncomment with their entries below. Each has a page in docs/sensors/.
# from fieldstation.sensors.modbus import Modbus      # needs the `modbus` extra
# from fieldstation.sensors.nut import Nut
# from fieldstation.sensors.phidget import Phidget    # needs the `phidget` extra


# Your own sensor: subclass Sensor, declare options as typed fields, return a number (or a dict of
# fields) from read(). A blocking read() runs in its own thread; `async def read` is fine too.
class LoadAverage(Sensor):
    """The host's load average over 1, 5 or 15 minutes."""

    driver = "loadavg"
    minutes: Literal[1, 5, 15] = 1

    def read(self) -> float:
        one, five, fifteen = os.getloadavg()
        return {1: one, 5: five, 15: fifteen}[self.minutes]


sensors = {
    "Cryostat": [
        Simulated(
            name="cryo_temp",
            description="Cold plate temperature",
            unit="K",
            signal="sine",
            value=4.2,
            amplitude=0.05,
            period=120,
            interval=1,
            precision=4,
            valid_range=(0, 400),
            limits={"value": (3.9, 4.5)},
        ),
        Simulated(
            name="cryo_pressure",
            description="Vacuum gauge (log output, 0–10 V)",
            unit="mbar",
            signal="ramp",
            value=2.0,
            amplitude=1.0,
            period=300,
            interval=2,
            # The gauge's calibration curve: p = 10^(1.667·U − 11.33) mbar.
            conversion=PowerOfTen(a=1.0, b=1.667, c=11.33),
        ),
    ],
    "Room": [
        Simulated(
            name="room_temp",
            description="Lab air temperature",
            unit="°C",
            signal="random_walk",
            value=21.0,
            amplitude=0.02,
            seed=1,
            interval=5,
            precision=2,
            valid_range=(-20, 60),
            limits={"value": (17, 26)},
        ),
        Simulated(
            name="room_humidity",
            description="Lab relative humidity (0–1 V sensor)",
            unit="%",
            signal="sine",
            value=0.45,
            amplitude=0.05,
            period=600,
            interval=5,
            conversion=Linear(slope=100.0),
            precision=1,
        ),
    ],
    "Power": [
        # A multi-value device: one read, several fields, each with its unit.
        Simulated(
            name="mains",
            description="Mains supply",
            fields=["voltage", "current"],
            unit={"voltage": "V", "current": "A"},
            signal="sine",
            value={"voltage": 230.0, "current": 4.0},
            amplitude=0.5,
            period=30,
            interval=1,
            precision=2,
        ),
    ],
    "Bench": [
        # The lab's Arduino Due (agent/arduino/fieldstation_analog): 12 analog inputs over Ethernet, in volts,
        # with a per-channel conversion. `fieldstation demo` and `fieldstation simulate` run a simulated board
        # at 127.0.0.1:5000; put your board's address here.
        Arduino(
            name="due",
            description="Bench analog inputs",
            host="127.0.0.1",
            port=5000,
            channels={0: "pressure", 1: "flow"},
            conversion={"pressure": Linear(slope=2.0), "flow": Polynomial(coefficients=[0.0, 12.5, 0.8])},
            unit={"pressure": "bar", "flow": "l/min"},
            interval=1,
            precision=3,
        ),
        # Any device answering JSON over HTTP: values picked by path.
        HttpJson(
            name="roof",
            description="Roof weather station",
            url="http://127.0.0.1:8089/weather",
            fields={"temp": "data.outdoor.temp", "rh": "data.outdoor.rh"},
            unit={"temp": "°C", "rh": "%"},
            interval=10,
        ),
    ],
    # "Energy": [
    #     # Modbus meters: a model is a register map (orno_we515, eastron_sdm120, eastron_sdm630, or your .toml).
    #     # Meters on one RS-485 port share it and are polled in turn. See docs/sensors/modbus.md.
    #     Modbus(name="mains_meter", model="orno_we515", port="/dev/ttyUSB0", device_id=1, interval=10),
    #     Modbus(name="heat_pump", model="eastron_sdm120", port="/dev/ttyUSB0", device_id=2, baudrate=9600),
    #     Modbus(name="workshop", model="eastron_sdm630", host="192.168.1.40", tcp_port=502, device_id=1),
    # ],
    # "Furnace": [
    #     # A thermocouple on a Phidget TMP1101 board: hub serial, hub port, channel. See docs/sensors/phidget.md.
    #     Phidget(name="furnace_tc", serial=561234, hub_port=0, channel=0, thermocouple="K", interval=1,
    #             limits={"value": (0, 1100)}),
    # ],
    # "UPS": [
    #     # Any UPS upsd serves: USB (usbhid-ups), Eaton network cards (snmp-ups, netxml-ups). See docs/sensors/nut.md.
    #     Nut(name="ups", ups="eaton5px", description="Server-room UPS", interval=5),
    # ],
    "Host": [
        LoadAverage(name="load1", description="Load average, 1 min", unit="", interval=10, precision=2),
        # The Pi's own health: CPU, memory, disk, SoC temperature, throttling, SD-card writes. docs/sensors/pi.md.
        Pi(name="pi", description="This station", mounts=["/"], interval=10),
    ],
}
