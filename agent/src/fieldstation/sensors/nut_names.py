"""NUT's variable names as a data table: which are measurements (with their unit) and which are text.

Transcribed from NUT's ``docs/nut-names.txt`` ("NUT command and variable naming scheme"). A variable whose value
NUT defines as a string (serials, firmware versions, dates, identifiers, statuses, yes/no switches, anything NUT
calls "opaque") is :data:`TEXT`, however numeric it looks: ``ups.serial: 09000717`` is not the number 9000717.
Every other variable is a number, with the unit NUT's description gives it ("" when NUT gives none: counts,
power factors).

Names with an index follow NUT's placeholders: ``n`` for an outlet, outlet group or ambient sensor index (``outlet.3``,
``ambient.1``; ``outlet``/``ambient`` without index are index 0), ``x`` for a dry contact. Three-phase values are
``DOMAIN[.CONTEXT].SPEC`` (``input.L1.current``, ``output.bypass.L1-N.voltage``) and are looked up by their SPEC.
"""

from __future__ import annotations

import re
from typing import Final

#: The kind of a variable whose value is text, never parsed as a number.
TEXT: Final = None

# Units, spelt as the rest of Fieldstation spells them (the dashboards map them to Grafana's).
PCT, S, V, A, HZ, W, VA, DEGC = "%", "s", "V", "A", "Hz", "W", "VA", "°C"

#: Variable → unit ("" for a number without unit) or :data:`TEXT`.
NAMES: Final[dict[str, str | None]] = {
    # device: general unit information
    "device.model": TEXT,
    "device.mfr": TEXT,
    "device.serial": TEXT,
    "device.type": TEXT,
    "device.description": TEXT,
    "device.contact": TEXT,
    "device.location": TEXT,
    "device.part": TEXT,
    "device.macaddr": TEXT,
    "device.uptime": S,
    "device.count": "",
    # ups: general unit information
    "ups.status": TEXT,
    "ups.alarm": TEXT,
    "ups.time": TEXT,
    "ups.date": TEXT,
    "ups.model": TEXT,
    "ups.mfr": TEXT,
    "ups.mfr.date": TEXT,
    "ups.serial": TEXT,
    "ups.vendorid": TEXT,
    "ups.productid": TEXT,
    "ups.firmware": TEXT,
    "ups.firmware.aux": TEXT,
    "ups.temperature": DEGC,
    "ups.load": PCT,
    "ups.load.high": PCT,
    "ups.id": TEXT,
    "ups.delay.start": S,
    "ups.delay.reboot": S,
    "ups.delay.shutdown": S,
    "ups.timer.start": S,
    "ups.timer.reboot": S,
    "ups.timer.shutdown": S,
    "ups.test.interval": S,
    "ups.test.result": TEXT,
    "ups.test.date": TEXT,
    "ups.display.language": TEXT,
    "ups.contacts": TEXT,
    "ups.efficiency": PCT,
    "ups.power": VA,
    "ups.power.nominal": VA,
    "ups.realpower": W,
    "ups.realpower.nominal": W,
    "ups.beeper.status": TEXT,
    "ups.type": TEXT,
    "ups.watchdog.status": TEXT,
    "ups.start.auto": TEXT,
    "ups.start.battery": TEXT,
    "ups.start.reboot": TEXT,
    "ups.shutdown": TEXT,
    # input: incoming line/power information
    "input.voltage": V,
    "input.voltage.maximum": V,
    "input.voltage.minimum": V,
    "input.voltage.status": TEXT,
    "input.voltage.low.warning": V,
    "input.voltage.low.critical": V,
    "input.voltage.high.warning": V,
    "input.voltage.high.critical": V,
    "input.voltage.nominal": V,
    "input.voltage.extended": TEXT,
    "input.transfer.delay": S,
    "input.transfer.reason": TEXT,
    "input.transfer.low": V,
    "input.transfer.high": V,
    "input.transfer.low.min": V,
    "input.transfer.low.max": V,
    "input.transfer.high.min": V,
    "input.transfer.high.max": V,
    "input.sensitivity": TEXT,
    "input.quality": TEXT,
    "input.current": A,
    "input.current.nominal": A,
    "input.current.status": TEXT,
    "input.current.low.warning": A,
    "input.current.low.critical": A,
    "input.current.high.warning": A,
    "input.current.high.critical": A,
    "input.feed.color": TEXT,
    "input.feed.desc": TEXT,
    "input.frequency": HZ,
    "input.frequency.nominal": HZ,
    "input.frequency.status": TEXT,
    "input.frequency.low": HZ,
    "input.frequency.high": HZ,
    "input.frequency.extended": TEXT,
    "input.transfer.boost.low": V,
    "input.transfer.boost.high": V,
    "input.transfer.trim.low": V,
    "input.transfer.trim.high": V,
    "input.load": PCT,
    "input.realpower": W,
    "input.realpower.nominal": W,
    "input.power": VA,
    "input.source": TEXT,  # which source (an identifier: 1, 2), not a quantity
    "input.source.preferred": TEXT,
    "input.phase.shift": "°",
    "input.phases": "",
    # output: outgoing power/inverter information
    "output.voltage": V,
    "output.voltage.nominal": V,
    "output.frequency": HZ,
    "output.frequency.nominal": HZ,
    "output.current": A,
    "output.current.nominal": A,
    "output.phases": "",
    # battery
    "battery.charge": PCT,
    "battery.charge.approx": TEXT,  # "<85": NUT calls it opaque
    "battery.charge.low": PCT,
    "battery.charge.restart": PCT,
    "battery.charge.warning": PCT,
    "battery.charger.status": TEXT,
    "battery.voltage": V,
    "battery.voltage.nominal": V,
    "battery.voltage.low": V,
    "battery.voltage.high": V,
    "battery.capacity": "Ah",
    "battery.current": A,
    "battery.current.total": A,
    "battery.temperature": DEGC,
    "battery.runtime": S,
    "battery.runtime.low": S,
    "battery.runtime.restart": S,
    "battery.alarm.threshold": TEXT,  # "0 (immediate)": a setting's label, not a quantity
    "battery.date": TEXT,
    "battery.mfr.date": TEXT,
    "battery.packs": "",
    "battery.packs.bad": "",
    "battery.type": TEXT,
    "battery.protection": TEXT,
    "battery.energysave": TEXT,
    "battery.energysave.load": PCT,
    "battery.energysave.delay": "min",
    "battery.energysave.realpower": W,
    # ambient: external probes (n = sensor index)
    "ambient.count": "",
    "ambient.n.name": TEXT,
    "ambient.n.mfr": TEXT,
    "ambient.n.model": TEXT,
    "ambient.n.firmware": TEXT,
    "ambient.n.present": TEXT,
    "ambient.n.temperature": DEGC,
    "ambient.n.temperature.alarm": TEXT,
    "ambient.n.temperature.status": TEXT,
    "ambient.n.temperature.high": DEGC,
    "ambient.n.temperature.high.warning": DEGC,
    "ambient.n.temperature.high.critical": DEGC,
    "ambient.n.temperature.low": DEGC,
    "ambient.n.temperature.low.warning": DEGC,
    "ambient.n.temperature.low.critical": DEGC,
    "ambient.n.temperature.maximum": DEGC,
    "ambient.n.temperature.minimum": DEGC,
    "ambient.n.humidity": PCT,
    "ambient.n.humidity.alarm": TEXT,
    "ambient.n.humidity.status": TEXT,
    "ambient.n.humidity.high": PCT,
    "ambient.n.humidity.high.warning": PCT,
    "ambient.n.humidity.high.critical": PCT,
    "ambient.n.humidity.low": PCT,
    "ambient.n.humidity.low.warning": PCT,
    "ambient.n.humidity.low.critical": PCT,
    "ambient.n.humidity.maximum": PCT,
    "ambient.n.humidity.minimum": PCT,
    "ambient.n.contacts.x.status": TEXT,
    "ambient.n.contacts.x.config": TEXT,
    "ambient.n.contacts.x.name": TEXT,
    # outlet: smart outlets (n = outlet index)
    "outlet.count": "",
    "outlet.n.id": TEXT,
    "outlet.n.name": TEXT,
    "outlet.n.desc": TEXT,
    "outlet.n.groupid": TEXT,
    "outlet.n.switch": TEXT,
    "outlet.n.status": TEXT,
    "outlet.n.alarm": TEXT,
    "outlet.n.switchable": TEXT,
    "outlet.n.autoswitch.charge.low": PCT,
    "outlet.n.battery.charge.low": PCT,
    "outlet.n.delay.shutdown": S,
    "outlet.n.delay.start": S,
    "outlet.n.timer.shutdown": S,
    "outlet.n.timer.start": S,
    "outlet.n.current": A,
    "outlet.n.current.nominal": A,  # in NUT's outlet.group example
    "outlet.n.current.maximum": A,
    "outlet.n.current.status": TEXT,
    "outlet.n.current.low.warning": A,
    "outlet.n.current.low.critical": A,
    "outlet.n.current.high.warning": A,
    "outlet.n.current.high.critical": A,
    "outlet.n.realpower": W,
    "outlet.n.voltage": V,
    "outlet.n.voltage.status": TEXT,
    "outlet.n.voltage.low.warning": V,
    "outlet.n.voltage.low.critical": V,
    "outlet.n.voltage.high.warning": V,
    "outlet.n.voltage.high.critical": V,
    "outlet.n.powerfactor": "",
    "outlet.n.crestfactor": "",
    "outlet.n.power": VA,
    "outlet.n.type": TEXT,
    "outlet.n.color": TEXT,  # "color" applies to groups (NUT: as input.feed.color)
    # outlet.group (n = group index); the outlet.n.* names apply to groups too
    "outlet.group.count": "",
    "outlet.group.n.type": TEXT,
    "outlet.group.n.count": "",
    "outlet.group.n.phase": TEXT,
    "outlet.group.n.input": TEXT,
    # driver and server: all text (versions, names, parameters)
    "driver.name": TEXT,
    "driver.version": TEXT,
    "driver.version.internal": TEXT,
    "driver.version.data": TEXT,
    "server.info": TEXT,
    "server.version": TEXT,
}

#: Prefixes whose every variable is text: ``driver.parameter.xxx``, ``driver.flag.xxx``.
TEXT_PREFIXES: Final = ("driver.", "server.")

#: Three-phase SPECs (valid with or without a CONTEXT) → unit or :data:`TEXT`.
PHASE_SPECS: Final[dict[str, str | None]] = {
    "alarm": TEXT,
    "current": A,
    "current.maximum": A,
    "current.minimum": A,
    "current.status": TEXT,
    "current.low.warning": A,
    "current.low.critical": A,
    "current.high.warning": A,
    "current.high.critical": A,
    "current.peak": A,
    "voltage": V,
    "voltage.nominal": V,
    "voltage.maximum": V,
    "voltage.minimum": V,
    "voltage.status": TEXT,
    "voltage.low.warning": V,
    "voltage.low.critical": V,
    "voltage.high.warning": V,
    "voltage.high.critical": V,
    "power": VA,
    "power.maximum": VA,
    "power.minimum": VA,
    "power.percent": PCT,
    "power.maximum.percent": PCT,
    "power.minimum.percent": PCT,
    "realpower": W,
    "powerfactor": "",
    "crestfactor": "",
    "load": PCT,
    "frequency": HZ,
    "frequency.nominal": HZ,
}

_PHASE = re.compile(
    r"(?:input|input\.bypass|input\.servicebypass|output|output\.bypass|output\.inverter|output\.servicebypass)"
    r"(?:\.(?:L1-L2|L2-L3|L3-L1|L1-N|L2-N|L3-N|L1|L2|L3|N))?\."
    rf"(?P<spec>{'|'.join(re.escape(spec) for spec in PHASE_SPECS)})"
)
_INDEXED = re.compile(r"(?P<family>outlet\.group|outlet|ambient)(?:\.\d+)?\.(?P<rest>.+)")
_CONTACT = re.compile(r"contacts\.\d+\.")


class Unknown(Exception):
    """A variable NUT's naming scheme does not define (a driver's own extension)."""


def kind(variable: str) -> str | None:
    """The unit of a numeric NUT variable ("" for none), or :data:`TEXT`; :class:`Unknown` if NUT does not name it."""
    if variable in NAMES:
        return NAMES[variable]
    if variable.startswith(TEXT_PREFIXES):
        return TEXT
    m = _INDEXED.fullmatch(variable)
    if m is not None:
        family, rest = m["family"], _CONTACT.sub("contacts.x.", m["rest"])
        for candidate in (f"{family}.n.{rest}", f"outlet.n.{rest}" if family == "outlet.group" else ""):
            if candidate in NAMES:
                return NAMES[candidate]
    m = _PHASE.fullmatch(variable)
    if m is not None:
        return PHASE_SPECS[m["spec"]]
    raise Unknown(variable)
