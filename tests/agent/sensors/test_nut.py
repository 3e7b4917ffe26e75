"""The nut driver against a real upsd with dummy-ups, while the scheduler runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldstation.influxd import LocalInfluxd
from fieldstation.scheduler import Scheduler
from fieldstation.sensor import SensorError
from fieldstation.sensors import nut_names
from fieldstation.sensors.nut import Nut, decode, events, field_name
from harness.agent import Recorder, running_agent, settings_for, wait_for
from harness.nut import ONLINE, PASSWORD, USER, Upsd


def test_outage_transitions_are_each_recorded_while_the_agent_runs(upsd: Upsd) -> None:
    rec = Recorder()
    sensor = Nut(name="ups", ups="dummy", port=upsd.port, interval=0.2, username=USER, password=PASSWORD)
    sequence = [
        {"ups.status": "OB DISCHRG", "battery.charge": "80", "battery.runtime": "2400", "ups.load": "23"},
        {"ups.status": "OB LB", "battery.charge": "15", "battery.runtime": "300", "ups.load": "23"},
        ONLINE,
    ]
    with Scheduler([sensor], rec).running():
        wait_for(lambda: rec.statuses() == ["OL"], 10, "OL recorded")
        for state in sequence:
            upsd.set_state(state)
            wait_for(lambda s=state: rec.statuses()[-1] == s["ups.status"], 15, f"{state['ups.status']} recorded")
    assert rec.statuses() == ["OL", "OB DISCHRG", "OB LB", "OL"]
    flags = next(r.fields for r in rec.readings if r.fields.get("status") == "OB LB")
    assert flags["on_battery"] is True and flags["low_battery"] is True and flags["on_line"] is False
    charges = [r.fields["battery_charge"] for r in rec.readings if "battery_charge" in r.fields]
    assert {100.0, 80.0, 15.0} <= set(charges)
    units = {r.tags["unit"] for r in rec.readings if "battery_runtime" in r.fields}
    assert units == {"s"}
    assert [r.fields["event"] for r in rec.readings if "event" in r.fields] == [
        "power_cut", "low_battery", "power_restored",
    ]
    (outage,) = [r.fields["outage_s"] for r in rec.readings if "outage_s" in r.fields]
    assert isinstance(outage, float) and outage > 0


def test_a_restart_of_upsd_is_survived(upsd: Upsd) -> None:
    rec = Recorder()
    sensor = Nut(name="ups", ups="dummy", port=upsd.port, interval=0.2)
    sched = Scheduler([sensor], rec, backoff_max=0.5)
    with sched.running():
        wait_for(lambda: len(rec.readings) > 0, 10, "first readings")
        upsd.stop_upsd()
        wait_for(lambda: sched.states["ups"].errors > 0, 10, "reads to fail while upsd is down")
        # "cannot connect", "connection reset" or "no answer", by when upsd died: one line naming upsd.
        assert (sched.states["ups"].last_error or "").startswith(f"SensorError: upsd 127.0.0.1:{upsd.port}: ")
        upsd.start_upsd()
        before = len(rec.readings)
        wait_for(lambda: len(rec.readings) > before, 15, "reads to resume")
    assert sched.states["ups"].failures_in_row == 0


def test_wrong_credentials_are_a_clear_error(upsd: Upsd) -> None:
    sensor = Nut(name="ups", ups="dummy", port=upsd.port, username=USER, password="wrong")
    with pytest.raises(
        SensorError, match=r"LOGIN as 'monuser' on 'dummy': access denied \(wrong user name or password"
    ):
        sensor.open()


def test_an_unknown_ups_is_a_clear_error(upsd: Upsd) -> None:
    with pytest.raises(SensorError, match=r"UPS 'nosuch': no such UPS on this upsd"):
        Nut(name="ups", ups="nosuch", port=upsd.port).read()


def test_decode_keeps_numbers_and_flags_and_skips_driver_variables() -> None:
    fields = decode(
        {"ups.status": "OL CHRG", "battery.charge": "97", "driver.parameter.pollinterval": "2", "ups.model": "X"}
    )
    assert fields["battery_charge"] == 97.0 and fields["charging"] is True and fields["on_line"] is True
    assert "driver_parameter_pollinterval" not in fields and "ups_model" not in fields


def test_runtime_left_is_written_only_on_battery_in_the_runtime_s_point() -> None:
    on_battery = decode({"ups.status": "OB DISCHRG", "battery.runtime": "2400"})
    assert on_battery["runtime_left"] == on_battery["battery_runtime"] == 2400.0
    assert "runtime_left" not in decode({"ups.status": "OL", "battery.runtime": "2400"})
    assert "runtime_left" not in decode({"ups.status": "OB", "battery.runtime": "unknown"})
    assert Nut(name="ups", ups="dummy").unit_of("runtime_left") == "s"  # one point with battery_runtime


def test_events_are_status_transitions() -> None:
    assert events({"OL"}, {"OB", "DISCHRG"}) == ["power_cut"]
    assert events({"OB", "DISCHRG"}, {"OB", "LB"}) == ["low_battery"]
    assert events({"OB", "LB"}, {"OL", "CHRG"}) == ["power_restored"]
    assert events({"OL"}, {"OL", "OVER", "RB"}) == ["overload", "replace_battery"]
    assert events({"OL"}, {"OL", "CHRG"}) == []


#: Text NUT defines as strings, each looking like a number, and numbers NUT gives a unit the old table lacked.
LOOKS_NUMERIC = {
    "ups.serial": "09000717",
    "device.serial": "800000000000000000000001",  # 24 digits: a float would make it 8.0e+23
    "ups.firmware": "5.100",
    "ups.firmware.aux": "02",
    "ups.id": "1234",
    "ups.model": "1500",
    "ups.mfr.date": "2019",
    "battery.date": "20240115",
    "battery.mfr.date": "2023.11",
    "ups.vendorid": "0463",
    "input.source": "1",
}
WITH_UNITS = {
    "input.transfer.low": ("170", "V"),
    "input.transfer.high": ("280", "V"),
    "input.frequency.nominal": ("50", "Hz"),
    "input.current.nominal": ("6.5", "A"),
    "output.current.nominal": ("6.5", "A"),
    "output.frequency.nominal": ("50", "Hz"),
    "ups.timer.reboot": ("-1", "s"),
    "ups.delay.reboot": ("60", "s"),
    "ups.test.interval": ("1209600", "s"),
    "outlet.1.delay.shutdown": ("120", "s"),
    "outlet.2.delay.start": ("3", "s"),
    "outlet.group.1.current": ("0.4", "A"),
    "input.L1.current": ("13.3", "A"),
    "input.bypass.L1-L2.voltage": ("398.3", "V"),
    "ambient.1.temperature": ("21.5", "°C"),
    "ambient.humidity": ("38.8", "%"),
    "battery.capacity": ("7.2", "Ah"),
    "battery.voltage.low": ("21,52", "V"),  # NUT's own example: a decimal comma
}


def test_text_stays_text_and_every_number_carries_nut_s_unit(upsd: Upsd) -> None:
    rec = Recorder()
    upsd.set_state({**ONLINE, **LOOKS_NUMERIC, **{k: v for k, (v, _) in WITH_UNITS.items()}})
    sensor = Nut(name="ups", ups="dummy", port=upsd.port, interval=0.2)
    with Scheduler([sensor], rec).running():
        wait_for(lambda: any("outlet_1_delay_shutdown" in r.fields for r in rec.readings), 15, "the new state read")
    latest: dict[str, tuple[object, str]] = {}
    for r in rec.readings:
        latest.update({name: (value, r.tags["unit"]) for name, value in r.fields.items()})
    stored_text = sorted(field_name(v) for v in LOOKS_NUMERIC if field_name(v) in latest)
    assert stored_text == [], f"text variables stored as numbers: {stored_text}"
    got = {v: latest.get(field_name(v)) for v in WITH_UNITS}
    expected = {v: (float(value.replace(",", ".")), unit) for v, (value, unit) in WITH_UNITS.items()}
    assert got == expected


def test_what_lands_in_influxdb_through_the_agent(upsd: Upsd, influxd: LocalInfluxd, tmp_path: Path) -> None:
    upsd.set_state({**ONLINE, **LOOKS_NUMERIC, **{k: v for k, (v, _) in WITH_UNITS.items()}})
    sensor = Nut(name="ups", ups="dummy", port=upsd.port, interval=0.5)
    with running_agent(settings_for(tmp_path, {"local": influxd.url}), [sensor]):
        wait_for(
            lambda: bool(influxd.rows('SELECT count(*) FROM "nut" WHERE "unit" = \'s\'', "fieldstation"))
            and any("outlet_1_delay_shutdown" in r for r in influxd.rows('SELECT * FROM "nut"', "fieldstation")),
            30, "the UPS's points in InfluxDB",
        )
    keys = {r["fieldKey"]: r["fieldType"] for r in influxd.rows('SHOW FIELD KEYS FROM "nut"', "fieldstation")}
    assert not {field_name(v) for v in LOOKS_NUMERIC} & set(keys), keys
    assert keys["status"] == "string" and keys["ups_timer_reboot"] == "float"
    rows = influxd.rows('SELECT * FROM "nut" WHERE "unit" != \'\'', "fieldstation")
    landed = {(name, row["unit"]) for row in rows for name, value in row.items() if value is not None and name in {
        field_name(v) for v in WITH_UNITS}}
    assert landed == {(field_name(v), unit) for v, (_, unit) in WITH_UNITS.items()}


def test_decode_never_parses_text_variables_however_numeric_they_look() -> None:
    fields = decode({**LOOKS_NUMERIC, "ups.load": "023.4", "battery.packs": "001", "ups.status": "OL"})
    assert {k: v for k, v in fields.items() if k in ("ups_load", "battery_packs")} == {
        "ups_load": 23.4, "battery_packs": 1.0,
    }
    assert not {field_name(v) for v in LOOKS_NUMERIC} & set(fields)
    assert decode({"ups.serial": "800000000000000000000001"}) == {}  # was 8.0e+23


def test_a_variable_nut_does_not_name_is_kept_when_it_is_a_number() -> None:
    fields = decode({"ups.vendor.thing": "12.5", "ups.vendor.label": "abc", "ups.vendor.nan": "nan"})
    assert fields == {"ups_vendor_thing": 12.5}
    assert Nut(name="ups", ups="dummy").unit_of("ups_vendor_thing") == ""


def test_a_numeric_variable_showing_text_is_skipped_that_read() -> None:
    assert decode({"battery.runtime": "unknown", "battery.charge": "1_000", "ups.load": "5.1.2"}) == {}


def test_the_users_units_override_nut_s_for_the_fields_they_name() -> None:
    sensor = Nut(name="ups", ups="dummy", unit={"ups_load": "percent"})
    assert (sensor.unit_of("ups_load"), sensor.unit_of("battery_runtime"), sensor.unit_of("outage_s")) == (
        "percent", "s", "s",
    )


@pytest.mark.parametrize(
    ("variable", "unit"),
    [
        ("outlet.3.current", "A"),
        ("outlet.current", "A"),  # outlet without index: the whole set (outlet.0)
        ("outlet.group.2.delay.start", "s"),  # outlet.n.* names apply to groups
        ("outlet.group.2.count", ""),
        ("ambient.2.contacts.1.status", nut_names.TEXT),
        ("output.L2-N.voltage", "V"),
        ("output.inverter.L3.realpower", "W"),
        ("input.bypass.frequency", "Hz"),
        ("input.L1.alarm", nut_names.TEXT),
        ("driver.parameter.pollinterval", nut_names.TEXT),
        ("outlet.1.desc", nut_names.TEXT),
    ],
)
def test_indexed_and_three_phase_names_follow_nut_s_scheme(variable: str, unit: str | None) -> None:
    assert nut_names.kind(variable) == unit


def test_the_only_numbers_without_a_unit_are_counts_and_ratios() -> None:
    unitless = sorted(n for n, u in {**nut_names.NAMES, **nut_names.PHASE_SPECS}.items() if u == "")
    assert unitless == [
        "ambient.count", "battery.packs", "battery.packs.bad", "crestfactor", "device.count", "input.phases",
        "outlet.count", "outlet.group.count", "outlet.group.n.count", "outlet.n.crestfactor",
        "outlet.n.powerfactor", "output.phases", "powerfactor",
    ]
    with pytest.raises(nut_names.Unknown):
        nut_names.kind("ups.vendor.thing")


def test_every_nut_unit_has_a_grafana_unit() -> None:
    from fieldstation.grafana.units import UNITS

    units = {u for u in {**nut_names.NAMES, **nut_names.PHASE_SPECS}.values() if u}
    assert {u for u in units if u not in UNITS} == set()
