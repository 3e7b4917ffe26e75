"""Units: every unit rendered in every panel is one of Grafana's unit ids (the list pinned from Grafana's value
formats), or ``suffix:<unit>`` for a sensor unit Grafana does not know; never a suffix wrapped around an id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fieldstation.energy import EnergySettings
from fieldstation.grafana import render_files
from fieldstation.grafana.settings import GrafanaSettings, Ups
from fieldstation.grafana.units import CURRENCIES, UNITS, currency_unit, grafana_unit
from fieldstation.loader import load_sensors
from fieldstation.sensor import Sensor
from fieldstation.sensors import nut, pi

IDS_FILE = Path(__file__).parent / "data" / "grafana-unit-ids.txt"
GRAFANA_IDS = frozenset(
    line.strip() for line in IDS_FILE.read_text(encoding="utf-8").splitlines() if line.strip() and line[0] != "#"
)
MAPS = Path(__file__).parents[3] / "agent" / "src" / "fieldstation" / "sensors" / "modbus_maps"
EXAMPLE_STATION = Path(__file__).parents[3] / "provisioning" / "example_station.py"
#: A station with every driver, units Grafana knows and one it does not (µS/cm).
EVERY_DRIVER = """\
from fieldstation.sensors.arduino import Arduino
from fieldstation.sensors.http_json import HttpJson
from fieldstation.sensors.modbus import Modbus
from fieldstation.sensors.nut import Nut
from fieldstation.sensors.phidget import Phidget
from fieldstation.sensors.pi import Pi
from fieldstation.sensors.simulated import Simulated
sensors = {
    "Power": [Nut(name="ups", ups="eaton", description="Server-room UPS"),
              Modbus(name="mains", model="orno_we515", port="/dev/ttyUSB0", description="Mains"),
              Modbus(name="sdm630", model="eastron_sdm630", port="/dev/ttyUSB1", description="Three phases"),
              Modbus(name="sdm120", model="eastron_sdm120", port="/dev/ttyUSB2", description="One phase")],
    "Host": [Pi(name="pi")],
    "Lab": [Phidget(name="tc", description="Furnace", limits={"value": (20, 900)}),
            Arduino(name="tank", host="192.0.2.7", channels={"2": "temperature", "3": "pressure"},
                    unit={"temperature": "°C", "pressure": "bar"}, description="Tank"),
            HttpJson(name="gw", url="http://192.0.2.8/v", fields={"ch1": "[0].value"}, unit="mA", description="Loop"),
            Simulated(name="cond", unit="µS/cm", description="Conductivity", limits={"value": (100, 900)}),
            Simulated(name="rh", unit="%", description="Humidity")],
}
"""
SETTINGS = GrafanaSettings(
    alerts={"emails": ["lab@example.org"]},  # type: ignore[arg-type]
    ups=[Ups(sensor="ups", rated_power_w=900)],
    backups=True,
)


def sensor_units(sensors: list[Sensor]) -> set[str]:
    return {s.unit_of(f) for s in sensors for f in s.dashboard_fields()}


def rendered_units(files: dict[str, str]) -> list[tuple[str, str]]:
    """(where, unit) for every unit of every panel: defaults and overrides."""
    import json

    out = []
    for rel, text in files.items():
        if not rel.endswith(".json"):
            continue
        for p in json.loads(text)["panels"]:
            if p["type"] == "row":
                continue
            where = f"{rel}: {p['title']}"
            out.append((where, p["fieldConfig"]["defaults"]["unit"]))
            for o in p["fieldConfig"]["overrides"]:
                out += [(f"{where} / {o['matcher']['options']}", x["value"]) for x in o["properties"] if x["id"] == "unit"]
    return out


def test_the_pinned_list_is_grafanas() -> None:
    assert len(GRAFANA_IDS) == 224  # categories.ts at the pinned commit
    assert {"none", "percent", "celsius", "dateTimeFromNow", "kwatth", "currencyEUR", "flowlpm"} <= GRAFANA_IDS
    assert "suffix:none" not in GRAFANA_IDS and "hertz" in GRAFANA_IDS


def test_every_id_of_the_tables_is_a_grafana_unit_id() -> None:
    assert {u: i for u, i in UNITS.items() if i not in GRAFANA_IDS} == {}
    assert {c: i for c, i in CURRENCIES.items() if i not in GRAFANA_IDS} == {}
    assert grafana_unit("µS/cm") == "suffix:µS/cm" and currency_unit("XAF") == "suffix:XAF"


def test_the_drivers_units_map_to_grafana_where_grafana_has_one() -> None:
    """The drivers' own units (NUT, the Pi, the register maps): only those Grafana lacks are left as text."""
    import tomllib

    maps = {r["unit"] for p in MAPS.glob("*.toml") for r in tomllib.loads(p.read_text())["register"] if "unit" in r}
    defaults = [nut.Nut(name="ups", ups="eaton").unit, pi.Pi(name="pi").unit]
    ours = {*(u for d in defaults if isinstance(d, dict) for u in d.values()), *maps}
    assert {"%", "s", "V", "°C", "B", "kWh"} <= ours
    assert {u for u in ours if u not in UNITS} == {"kvarh"}  # Grafana has kvar but no kvarh


@pytest.mark.parametrize("config", ["every_driver", "example_station"])
def test_every_rendered_unit_is_a_grafana_id_or_a_unit_grafana_lacks(tmp_path: Path, config: str) -> None:
    if config == "every_driver":
        path = tmp_path / "config.py"
        path.write_text(EVERY_DRIVER)
    else:
        path = EXAMPLE_STATION
    sensors = load_sensors(path)
    files = render_files(sensors, SETTINGS, EnergySettings(currency="EUR"))
    units = rendered_units(files)
    assert len(units) > 40
    lacking = {u for u in sensor_units(sensors) if u not in UNITS}
    bad: list[tuple[str, Any]] = []
    for where, unit in units:
        if unit.startswith("suffix:"):
            if unit.removeprefix("suffix:") not in lacking:
                bad.append((where, unit))
        elif unit not in GRAFANA_IDS:
            bad.append((where, unit))
    assert bad == []
    if config == "every_driver":
        assert ("dashboards/fieldstation/fieldstation-agent.json: Last backup", "dateTimeFromNow") in units
        assert any(u == "suffix:µS/cm" for _, u in units)
        assert {u for _, u in units} >= {"celsius", "pressurebar", "mamp", "kwatth", "percent", "none", "s", "bytes"}
