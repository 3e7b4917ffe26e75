"""The nut driver against a real upsd with dummy-ups, while the scheduler runs."""

from __future__ import annotations

import pytest

from fieldstation.scheduler import Scheduler
from fieldstation.sensor import SensorError
from fieldstation.sensors.nut import Nut, decode, events
from harness.agent import Recorder, wait_for
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


def test_events_are_status_transitions() -> None:
    assert events({"OL"}, {"OB", "DISCHRG"}) == ["power_cut"]
    assert events({"OB", "DISCHRG"}, {"OB", "LB"}) == ["low_battery"]
    assert events({"OB", "LB"}, {"OL", "CHRG"}) == ["power_restored"]
    assert events({"OL"}, {"OL", "OVER", "RB"}) == ["overload", "replace_battery"]
    assert events({"OL"}, {"OL", "CHRG"}) == []
