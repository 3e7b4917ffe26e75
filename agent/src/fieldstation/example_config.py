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

from fieldstation import Linear, PowerOfTen, Sensor
from fieldstation.sensors.simulated import Simulated

# from fieldstation.sensors.nut import Nut


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
    # "UPS": [
    #     # Any UPS upsd serves: USB (usbhid-ups), Eaton network cards (snmp-ups, netxml-ups). See docs/sensors/nut.md.
    #     Nut(name="ups", ups="eaton5px", description="Server-room UPS", interval=5),
    # ],
    "Host": [
        LoadAverage(name="load1", description="Load average, 1 min", unit="", interval=10, precision=2),
    ],
}
