"""The mqtt driver against a real Mosquitto on loopback, with a publisher playing Tasmota and Shelly devices:
mappings, plain payloads, payload timestamps, retained messages, a broker restart, malformed payloads."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from pydantic import ValidationError

from fieldstation.influxd import free_port
from fieldstation.reading import Reading
from fieldstation.scheduler import Scheduler
from fieldstation.sensor import SensorError
from fieldstation.sensors import mqtt
from fieldstation.sensors.mqtt import Mqtt
from harness.agent import wait_for
from harness.mosquitto import Mosquitto

TASMOTA_SENSOR = {
    "Time": "2023-11-14T23:13:20",
    "ENERGY": {"TotalStartTime": "2023-01-02T10:11:12", "Total": 123.456, "Yesterday": 1.234, "Today": 0.567,
               "Period": 1, "Power": 45, "ApparentPower": 60, "ReactivePower": 40, "Factor": 0.75, "Voltage": 231,
               "Current": 0.26},
}
TASMOTA_STATE = {
    "Time": "2023-11-14T23:13:20", "Uptime": "0T01:02:03", "UptimeSec": 3723, "Heap": 26, "SleepMode": "Dynamic",
    "Sleep": 50, "LoadAvg": 19, "MqttCount": 1, "POWER": "ON",
    "Wifi": {"AP": 1, "SSId": "field", "BSSId": "AA:BB:CC:DD:EE:FF", "Channel": 6, "Mode": "11n", "RSSI": 84,
             "Signal": -58, "LinkCount": 1, "Downtime": "0T00:00:03"},
}
SHELLY_SWITCH = {
    "id": 0, "source": "timer", "output": True, "apower": 45.2, "voltage": 230.4, "freq": 50.0, "current": 0.215,
    "aenergy": {"total": 1234.567, "by_minute": [753.1, 752.9, 751.0], "minute_ts": 1700003600},
    "temperature": {"tC": 38.2, "tF": 100.8},
}


@pytest.fixture
def sensors() -> Iterator[list[Mqtt]]:
    """Sensors opened by a test, closed after it (the last close drops the broker connection)."""
    opened: list[Mqtt] = []
    yield opened
    for s in opened:
        s.close()
    assert mqtt.connection_count() == 0


def opened(sensors: list[Mqtt], broker: Mosquitto, **kw: object) -> Mqtt:
    s = Mqtt(broker="127.0.0.1", port=broker.port, timeout=5, **kw)  # type: ignore[arg-type]
    s.open()
    sensors.append(s)
    return s


def read_until(sensor: Mqtt, done: Callable[[list[Reading]], bool], timeout: float = 15) -> list[Reading]:
    got: list[Reading] = []

    def attempt() -> bool:
        try:
            got[:] = sensor.read()
        except SensorError:
            return False
        return done(got)

    wait_for(attempt, timeout, f"a read of {sensor.topic} to match")
    return got


def lines(readings: list[Reading]) -> list[str]:
    return [r.to_line().rsplit(" ", 1)[0] for r in readings]  # without the timestamp


def test_tasmota_sensor_and_state_share_one_connection(mosquitto: Mosquitto, sensors: list[Mqtt]) -> None:
    plug = opened(sensors, mosquitto, name="plug", topic="tele/plug1/SENSOR", mapping="tasmota_sensor")
    state = opened(sensors, mosquitto, name="plug_state", topic="tele/plug1/STATE", mapping="tasmota_state")
    assert mqtt.connection_count() == 1
    assert len([c for c in mosquitto.clients_connected() if c.startswith("fieldstation-")]) == 1
    before = time.time_ns()
    mosquitto.publish("tele/plug1/SENSOR", json.dumps(TASMOTA_SENSOR))
    mosquitto.publish("tele/plug1/STATE", json.dumps(TASMOTA_STATE))
    got = read_until(plug, bool)
    assert lines(got) == [
        "mqtt,sensor=plug,unit=kWh energy_total=123.456,energy_yesterday=1.234,energy_today=0.567",
        "mqtt,sensor=plug,unit=W energy_power=45.0",
        "mqtt,sensor=plug,unit=VA energy_apparent_power=60.0",
        "mqtt,sensor=plug,unit=var energy_reactive_power=40.0",
        "mqtt,sensor=plug energy_power_factor=0.75",
        "mqtt,sensor=plug,unit=V energy_voltage=231.0",
        "mqtt,sensor=plug,unit=A energy_current=0.26",
    ]
    assert all(before <= r.time_ns <= time.time_ns() for r in got)  # stamped on arrival
    assert lines(read_until(state, bool)) == [
        "mqtt,sensor=plug_state,unit=s uptime=3723.0",
        "mqtt,sensor=plug_state,unit=kB heap=26.0",
        "mqtt,sensor=plug_state load_avg=19.0,mqtt_count=1.0,power_on=true,wifi_link_count=1.0",
        "mqtt,sensor=plug_state,unit=% wifi_rssi=84.0",
        "mqtt,sensor=plug_state,unit=dBm wifi_signal=-58.0",
    ]


def test_tasmota_sensors_and_the_payload_time(mosquitto: Mosquitto, sensors: list[Mqtt]) -> None:
    s = opened(sensors, mosquitto, name="room", topic="tele/th1/SENSOR", mapping="tasmota_sensor", time="Time")
    payload = {"Time": "2023-11-14T23:13:20", "DS18B20": {"Id": "0316A2790BFF", "Temperature": 21.3},
               "AM2301": {"Temperature": 22.1, "Humidity": 48.5, "DewPoint": 10.6}, "TempUnit": "C"}
    mosquitto.publish("tele/th1/SENSOR", json.dumps(payload))
    got = read_until(s, bool)
    assert lines(got) == [
        "mqtt,sensor=room,unit=°C ds18b20_temperature=21.3,am2301_temperature=22.1,am2301_dew_point=10.6",
        "mqtt,sensor=room,unit=% am2301_humidity=48.5",
    ]
    # Tasmota sends the device's local time without a zone: the station's local time.
    expected = int(dt.datetime(2023, 11, 14, 23, 13, 20).astimezone().timestamp()) * 10**9
    assert {r.time_ns for r in got} == {expected}


def test_shelly_status_topic(mosquitto: Mosquitto, sensors: list[Mqtt]) -> None:
    s = opened(sensors, mosquitto, name="fridge", topic="shellyplusplugs-a8032ab1c2d3/status/switch:0",
               mapping="shelly", measurement="power")
    mosquitto.publish("shellyplusplugs-a8032ab1c2d3/status/switch:0", json.dumps(SHELLY_SWITCH))
    assert lines(read_until(s, bool)) == [
        "power,sensor=fridge on=true",
        "power,sensor=fridge,unit=W power=45.2",
        "power,sensor=fridge,unit=V voltage=230.4",
        "power,sensor=fridge,unit=A current=0.215",
        "power,sensor=fridge,unit=Hz frequency=50.0",
        "power,sensor=fridge,unit=Wh energy_total=1234.567",
        "power,sensor=fridge,unit=°C temperature=38.2",
    ]


def test_plain_payloads_json_paths_and_wildcards(mosquitto: Mosquitto, sensors: list[Mqtt]) -> None:
    relay = opened(sensors, mosquitto, name="pump", topic="shellies/shelly1pm-84cca8/relay/0/power", unit="W")
    rooms = opened(sensors, mosquitto, name="rooms", topic="zigbee2mqtt/+", unit={"temperature": "°C"},
                   fields={"temperature": "temperature", "battery": "battery"}, time="ts")
    mosquitto.publish("shellies/shelly1pm-84cca8/relay/0/power", "45.20")
    assert lines(read_until(relay, bool)) == ["mqtt,sensor=pump,unit=W value=45.2"]
    mosquitto.publish("zigbee2mqtt/kitchen", json.dumps({"temperature": 21.5, "battery": 97, "ts": 1700000000123}))
    mosquitto.publish("zigbee2mqtt/cellar", json.dumps({"temperature": 12.0, "battery": 80, "ts": 1700000001}))
    seen: dict[str, Reading] = {}

    def both_rooms() -> bool:
        with contextlib.suppress(SensorError):  # nothing new repeats the last readings: keyed by line, counted once
            seen.update((r.to_line(), r) for r in rooms.read())
        return len(seen) >= 4

    wait_for(both_rooms, 15, "both rooms")
    assert sorted(seen) == [
        "mqtt,sensor=rooms,topic=zigbee2mqtt/cellar battery=80.0 1700000001000000000",
        "mqtt,sensor=rooms,topic=zigbee2mqtt/cellar,unit=°C temperature=12.0 1700000001000000000",
        "mqtt,sensor=rooms,topic=zigbee2mqtt/kitchen battery=97.0 1700000000123000000",
        "mqtt,sensor=rooms,topic=zigbee2mqtt/kitchen,unit=°C temperature=21.5 1700000000123000000",
    ]


def test_retained_value_is_read_on_subscribe_once_and_can_be_ignored(mosquitto: Mosquitto, sensors: list[Mqtt]) -> None:
    mosquitto.publish("shellies/h-t/sensor/temperature", "19.25", retain=True)
    s = opened(sensors, mosquitto, name="ht", topic="shellies/h-t/sensor/temperature", max_age=3600)
    first = read_until(s, bool)
    assert lines(first) == ["mqtt,sensor=ht value=19.25"]
    s.close()
    s.open()  # subscribes again: the broker resends the retained message, unchanged
    wait_for(lambda: mosquitto.log.read_text().count("Sending PUBLISH to fieldstation-") >= 2, 10, "the resend")
    again = s.read()
    assert [r.to_line() for r in again] == [r.to_line() for r in first]  # the last readings, same timestamp
    ignoring = opened(sensors, mosquitto, name="ht2", topic="shellies/h-t/sensor/temperature", retained="ignore")
    wait_for(lambda: mosquitto.log.read_text().count("Sending PUBLISH to fieldstation-") >= 3, 10, "the retained copy")
    with pytest.raises(SensorError, match="no message yet"):
        ignoring.read()
    mosquitto.publish("shellies/h-t/sensor/temperature", "19.5")
    assert lines(read_until(ignoring, bool)) == ["mqtt,sensor=ht2 value=19.5"]


def test_broker_restart_is_reported_then_reconnected_and_resubscribed(mosquitto: Mosquitto, sensors: list[Mqtt]) -> None:
    s = opened(sensors, mosquitto, name="plug", topic="stat/plug1/POWER")
    mosquitto.publish("stat/plug1/POWER", "ON")
    assert lines(read_until(s, bool)) == ["mqtt,sensor=plug value=true"]
    mosquitto.stop()
    problems: list[str] = []

    def fails() -> bool:
        try:
            s.read()
        except SensorError as exc:
            problems.append(str(exc))
            return True
        return False

    wait_for(fails, 15, "the read to report the lost broker")
    assert problems[-1].startswith(f"mqtt://127.0.0.1:{mosquitto.port} stat/plug1/POWER: not connected: ")
    assert "\n" not in problems[-1]
    mosquitto.start()
    wait_for(lambda: "Sending SUBACK to fieldstation-" in mosquitto.log.read_text().split("mosquitto version")[-1],
             30, "the driver to reconnect and subscribe again")
    mosquitto.publish("stat/plug1/POWER", "OFF")
    assert lines(read_until(s, lambda r: r[0].fields == {"value": False})) == ["mqtt,sensor=plug value=false"]


def test_malformed_payloads_are_one_line_errors_counted_and_the_sensor_goes_on(
    mosquitto: Mosquitto, sensors: list[Mqtt]
) -> None:
    s = opened(sensors, mosquitto, name="plug", topic="tele/plug1/SENSOR", mapping="tasmota_sensor")
    mosquitto.publish("tele/plug1/SENSOR", b"{\"ENERGY\": {\"Power\": 4")  # cut off
    errors: list[str] = []

    def error() -> bool:
        try:
            s.read()
        except SensorError as exc:
            errors.append(str(exc))
            return "not JSON" in str(exc)
        return False

    wait_for(error, 15, "the malformed payload to be reported")
    assert errors[-1].startswith(f"mqtt://127.0.0.1:{mosquitto.port} tele/plug1/SENSOR: payload is not JSON (")
    assert "\n" not in errors[-1]
    assert s.malformed == 1
    # A good and a bad message together: the good one is returned first, the bad one reported by the next read.
    mosquitto.publish("tele/plug1/SENSOR", json.dumps({"ENERGY": {"Power": 12}}))
    mosquitto.publish("tele/plug1/SENSOR", json.dumps({"Wifi": {"RSSI": 80}}))
    mosquitto.publish("tele/plug1/SENSOR", json.dumps({"ENERGY": {"Power": [1, {"a": 1}]}}))
    outcomes: list[str] = []

    def both_problems_reported() -> bool:
        try:
            outcomes.append(" ".join(lines(s.read())))
        except SensorError as exc:
            if "no message yet" not in str(exc):
                outcomes.append(f"error: {exc}")
        errors = [o for o in outcomes if o.startswith("error: ")]
        return sum(2 if o.endswith("(and 1 more)") else 1 for o in errors) >= 2

    wait_for(both_problems_reported, 15, "both bad messages to be reported")
    where = f"error: mqtt://127.0.0.1:{mosquitto.port} tele/plug1/SENSOR: "
    good = "mqtt,sensor=plug,unit=W energy_power=12.0"
    # However the messages fell into reads: the good one first, each problem once, in order, one line each.
    assert outcomes[0] == good
    assert {o for o in outcomes[1:] if not o.startswith("error: ")} <= {good}  # repeats of the last value only
    errors = [o for o in outcomes if o.startswith("error: ")]
    assert errors in (
        [f"{where}no tasmota_sensor value in the payload (keys: Wifi) (and 1 more)"],
        [f"{where}no tasmota_sensor value in the payload (keys: Wifi)",
         f"{where}ENERGY.Power is dict, not a number, bool or string"],
    ), errors
    assert s.malformed == 3
    assert " ".join(lines(s.read())) == good  # nothing new: the last value, same timestamp


def test_the_last_value_is_repeated_for_max_age_only(mosquitto: Mosquitto, sensors: list[Mqtt]) -> None:
    s = opened(sensors, mosquitto, name="t", topic="sensors/t", max_age=0.5)
    mosquitto.publish("sensors/t", "1.5")
    first = read_until(s, bool)
    assert [r.to_line() for r in s.read()] == [r.to_line() for r in first]
    time.sleep(0.6)
    with pytest.raises(SensorError, match=r"sensors/t: no message for \d+ s \(max_age 0.5 s\)"):
        s.read()


def test_an_unreachable_broker_fails_open_in_one_line() -> None:
    port = free_port()
    s = Mqtt(name="x", topic="a/b", port=port, timeout=1)
    with pytest.raises(SensorError) as exc:
        s.open()
    assert str(exc.value) == f"mqtt://127.0.0.1:{port} a/b: not connected within 0.8 s: cannot reach the broker"
    assert mqtt.connection_count() == 0


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"topic": "a/#/b"}, "# must be the last level"),
        ({"topic": "a/b+"}, r"\+ must fill a whole level"),
        ({"topic": "a", "fields": {"t": "x"}, "mapping": "shelly"}, "fields or mapping, not both"),
        ({"topic": "a", "time": "x..y"}, "path 'x..y'"),
        ({"topic": "a", "mapping": "tasmota"}, "tasmota_sensor"),
        ({"topic": "a", "password": "pw"}, "password needs username"),
    ],
)
def test_bad_options_are_refused_at_load(options: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        Mqtt(name="x", **options)  # type: ignore[arg-type]


def test_the_scheduler_reads_it_across_a_broker_restart(mosquitto: Mosquitto) -> None:
    readings: list[Reading] = []
    lock = threading.Lock()

    def emit(batch: list[Reading]) -> None:
        with lock:
            readings.extend(batch)

    def powers() -> set[object]:
        with lock:
            return {r.fields.get("energy_power") for r in readings}

    plug = Mqtt(name="plug", topic="tele/plug1/SENSOR", mapping="tasmota_sensor", port=mosquitto.port, interval=0.2)
    sched = Scheduler([plug], emit, backoff_max=0.3)
    with sched.running():
        wait_for(lambda: sched.states["plug"].errors > 0, 10, "the first read, with no message yet")
        mosquitto.publish("tele/plug1/SENSOR", json.dumps({"ENERGY": {"Power": 40}}))
        wait_for(lambda: 40.0 in powers(), 10, "the first reading")
        mosquitto.stop()
        mosquitto.start()
        wait_for(lambda: "Sending SUBACK to fieldstation-" in mosquitto.log.read_text().split("mosquitto version")[-1],
                 30, "the driver to subscribe again")
        mosquitto.publish("tele/plug1/SENSOR", json.dumps({"ENERGY": {"Power": 41}}))
        wait_for(lambda: 41.0 in powers(), 10, "a reading after the restart")
    # The scheduler closes the sensor on its bus thread at shutdown: then the connection goes.
    wait_for(lambda: mqtt.connection_count() == 0, 10, "the connection to close")


def test_dashboards_show_what_the_device_kind_sends_or_what_the_user_names() -> None:
    plug = Mqtt(name="p", topic="tele/p/SENSOR", mapping="tasmota_sensor")
    assert plug.dashboard_fields() == ["energy_power", "energy_voltage", "energy_total"]
    assert [plug.unit_of(f) for f in plug.dashboard_fields()] == ["W", "V", "kWh"]  # before any message
    assert plug.unit_of("ds18b20-1_temperature") == "°C"
    assert plug.unit_of("energy_power_2") == "W"
    probe = Mqtt(name="t", topic="tele/t/SENSOR", mapping="tasmota_sensor", limits={"ds18b20_temperature": (2, 8)})
    assert probe.dashboard_fields() == ["ds18b20_temperature"]
    ht = Mqtt(name="ht", topic="shellyhtg3-1/status/temperature:0", mapping="shelly", unit={"temperature": "°C"})
    assert ht.dashboard_fields() == ["temperature"]
    assert Mqtt(name="s", topic="x/status/switch:0", mapping="shelly").unit_of("energy_total") == "Wh"
    assert Mqtt(name="st", topic="tele/p/STATE", mapping="tasmota_state").unit_of("wifi_signal") == "dBm"


def test_a_payload_time_from_an_unset_clock_is_refused(mosquitto: Mosquitto, sensors: list[Mqtt]) -> None:
    s = opened(sensors, mosquitto, name="room", topic="tele/th1/SENSOR", mapping="tasmota_sensor", time="Time")
    mosquitto.publish("tele/th1/SENSOR", json.dumps({"Time": "1970-01-01T00:00:42", "SI7021": {"Temperature": 20.5}}))
    errors: list[str] = []

    def refused() -> bool:
        try:
            s.read()
        except SensorError as exc:
            errors.append(str(exc))
        return bool(errors) and "no message yet" not in errors[-1]

    wait_for(refused, 15, "the message to be refused")
    expected = dt.datetime(1970, 1, 1, 0, 0, 42).astimezone().astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert errors[-1] == (
        f"mqtt://127.0.0.1:{mosquitto.port} tele/th1/SENSOR: the payload's time {expected} UTC is wrong: "
        "the device's clock is not set (leave `time` unset)"
    )
    assert s.malformed == 1
