"""The phidget driver: the real phidget22 library where it works without hardware (channel objects, the attach
timeout), and a stand-in channel (tests/harness/phidget.py) for attach, data and error events."""

from __future__ import annotations

import threading
import time

import pytest
from Phidget22.ErrorEventCode import ErrorEventCode

from fieldstation.reading import Reading
from fieldstation.scheduler import Scheduler
from fieldstation.sensor import SensorError, process
from fieldstation.sensors import phidget as driver
from fieldstation.sensors.phidget import Phidget
from harness.agent import wait_for
from harness.phidget import StandInChannel


def test_the_real_library_creates_channels_and_times_out_without_hardware() -> None:
    ch = driver.new_channel()
    try:
        ch.setChannel(2)
        assert ch.getChannel() == 2
    finally:
        ch.close()
    sensor = Phidget(name="tc", serial=561234, hub_port=3, channel=1, attach_timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(SensorError) as exc:
        sensor.open()
    assert time.monotonic() - t0 < 3
    message = str(exc.value)
    assert message.startswith(
        "no Phidget temperature channel at serial 561234, hub port 3, channel 1 attached within 0.3 s: Timed Out (code 3)"
    )
    assert "\n" not in message


def test_attach_applies_address_type_and_interval(phidget_channels: list[StandInChannel]) -> None:
    sensor = Phidget(name="tc", serial=561234, hub_port=3, channel=1, thermocouple="J", interval=2)
    sensor.open()
    (ch,) = phidget_channels
    assert ch.settings == {"serial": 561234, "hub_port": 3, "channel": 1, "thermocouple": 1, "data_interval": 2000}
    sensor.close()
    assert ch.closed


def test_temperatures_come_from_events_and_errors_are_never_temperatures(phidget_channels: list[StandInChannel]) -> None:
    sensor = Phidget(name="tc", channel=0, thermocouple="K", data_interval=250)
    sensor.open()
    ch = phidget_channels[0]
    assert ch.settings["thermocouple"] == 2 and ch.settings["data_interval"] == 250
    with pytest.raises(SensorError, match="no valid temperature yet"):
        sensor.read()  # attached, no event yet, and the library has no value either
    ch.temperature_change(21.375)
    assert sensor.read() == 21.375
    ch.error(ErrorEventCode.EEPHIDGET_BADCONNECTION, "Open Circuit")
    with pytest.raises(SensorError, match=r"open circuit: thermocouple disconnected or broken \(Open Circuit\)"):
        sensor.read()
    ch.error(ErrorEventCode.EEPHIDGET_OUTOFRANGEHIGH, "Temperature too high")
    with pytest.raises(SensorError, match="above the measurable range"):
        sensor.read()
    ch.error(ErrorEventCode.EEPHIDGET_PACKETLOST, "Packet lost")  # not about the value: the state stays
    with pytest.raises(SensorError, match="above the measurable range"):
        sensor.read()
    ch.error(ErrorEventCode.EEPHIDGET_OK, "Cleared")
    ch.temperature = 22.0
    assert sensor.read() == 22.0  # cleared; no event yet, so the library's value
    ch.temperature_change(22.5)
    assert sensor.read() == 22.5
    sensor.close()


def test_detach_and_reattach(phidget_channels: list[StandInChannel]) -> None:
    sensor = Phidget(name="tc", thermocouple="T")
    sensor.open()
    ch = phidget_channels[0]
    ch.temperature_change(-40.5)
    ch.detach()
    ch.settings.clear()
    with pytest.raises(SensorError, match=r"Phidget at any serial, channel 0 is detached"):
        sensor.read()
    ch.attach()
    assert ch.settings["thermocouple"] == 4  # settings are re-applied at every attach
    ch.temperature_change(-39.0)
    assert sensor.read() == -39.0
    sensor.close()


def test_a_phidget_through_the_scheduler_records_temperatures_and_no_bogus_values(
    phidget_channels: list[StandInChannel],
) -> None:
    readings: list[Reading] = []
    lock = threading.Lock()

    def emit(rs: list[Reading]) -> None:
        with lock:
            readings.extend(rs)

    sensor = Phidget(name="furnace", interval=0.1, valid_range=(-270, 1372))
    sched = Scheduler([sensor], emit, backoff_max=0.2)
    with sched.running():
        wait_for(lambda: bool(phidget_channels), 5, "channel opened")

        def hot() -> bool:
            phidget_channels[-1].temperature_change(812.25)
            with lock:
                return any(r.fields.get("value") == 812.25 for r in readings)

        wait_for(hot, 5, "a temperature recorded")
        errors = sched.states["furnace"].errors  # some already, from reads before the first event
        phidget_channels[-1].error(ErrorEventCode.EEPHIDGET_BADCONNECTION, "Open Circuit")
        wait_for(lambda: sched.states["furnace"].errors > errors, 5, "the open circuit reported")
        with lock:
            n = len(readings)
        time.sleep(0.4)
        with lock:
            assert len(readings) == n  # nothing stored while the thermocouple is open
    assert {r.tags["unit"] for r in readings} == {"°C"}
    assert len(phidget_channels) == 1  # value errors keep the channel open: no reopen churn
    assert "open circuit" in (sched.states["furnace"].last_error or "")


def test_process_of_a_phidget_reading() -> None:
    out = process(Phidget(name="tc", precision=1), 23.456, 1)
    assert [r.to_line() for r in out.readings] == ["phidget,sensor=tc,unit=°C value=23.5 1"]
