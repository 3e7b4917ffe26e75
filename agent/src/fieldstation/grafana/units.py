"""Our unit names (the ``unit`` of config.py's sensors, the drivers' tables, the register maps) → Grafana's unit ids.

The ids are those of Grafana's value formats (``packages/grafana-data/src/valueFormats/categories.ts``);
``tests/agent/grafana/data/grafana-unit-ids.txt`` pins that list and a test checks every id rendered against it.
A unit Grafana does not know is shown as text after the number (``suffix:<unit>``). Panels that show something
that is not a sensor's unit (a timestamp, a count) name one of the ids below, never a ``suffix:`` of an id.
"""

from __future__ import annotations

#: Our unit → Grafana's unit id.
UNITS = {
    "": "none",
    "count": "none",
    "°C": "celsius",
    "°F": "fahrenheit",
    "K": "kelvin",
    "%": "percent",
    "%RH": "humidity",
    "°": "degree",
    "V": "volt",
    "mV": "mvolt",
    "kV": "kvolt",
    "A": "amp",
    "mA": "mamp",
    "W": "watt",
    "kW": "kwatt",
    "mW": "mwatt",
    "W/m²": "Wm2",
    "VA": "voltamp",
    "kVA": "kvoltamp",
    "var": "voltampreact",
    "kvar": "kvoltampreact",
    "Wh": "watth",
    "kWh": "kwatth",
    "Ah": "amph",
    "mAh": "mamph",
    "Ω": "ohm",
    "Hz": "hertz",
    "rpm": "rotrpm",
    "ns": "ns",
    "µs": "µs",
    "ms": "ms",
    "s": "s",
    "min": "m",
    "h": "h",
    "d": "d",
    "B": "bytes",
    "dB": "dB",
    "dBm": "dBm",
    "mbar": "pressurembar",
    "bar": "pressurebar",
    "Pa": "pressurepa",
    "hPa": "pressurehpa",
    "kPa": "pressurekpa",
    "psi": "pressurepsi",
    "l/min": "flowlpm",
    "L/min": "flowlpm",
    "l/h": "litreh",
    "L/h": "litreh",
    "m³": "m3",
    "l": "litre",
    "L": "litre",
    "ppm": "ppm",
    "ppb": "conppb",
    "µg/m³": "conμgm3",
    "mg/m³": "conmgm3",
    "lux": "lux",
    "lx": "lux",
    "m/s": "velocityms",
    "km/h": "velocitykmh",
    "mm": "lengthmm",
    "m": "lengthm",
    "km": "lengthkm",
    "g": "massg",
    "kg": "masskg",
}

#: ISO 4217 code (agent.toml's ``[energy] currency``) → Grafana's currency unit id.
CURRENCIES = {
    "USD": "currencyUSD",
    "GBP": "currencyGBP",
    "EUR": "currencyEUR",
    "JPY": "currencyJPY",
    "RUB": "currencyRUB",
    "UAH": "currencyUAH",
    "BRL": "currencyBRL",
    "DKK": "currencyDKK",
    "ISK": "currencyISK",
    "NOK": "currencyNOK",
    "SEK": "currencySEK",
    "CZK": "currencyCZK",
    "CHF": "currencyCHF",
    "PLN": "currencyPLN",
    "ZAR": "currencyZAR",
    "INR": "currencyINR",
    "KRW": "currencyKRW",
}

#: What panels show that is not a sensor's unit.
TIME_AGO = "dateTimeFromNow"  # a timestamp, as "3 hours ago"
PERCENT = UNITS["%"]
COUNT = UNITS["count"]


def grafana_unit(unit: str) -> str:
    """Grafana's id for one of our units, else the unit as text after the number."""
    return UNITS.get(unit, f"suffix:{unit}")


def currency_unit(code: str) -> str:
    return CURRENCIES.get(code, f"suffix:{code}")
