"""The agent's MQTT output against a real Mosquitto (and a real InfluxDB): state messages matching the readings,
retained Home Assistant discovery and availability, a broker restart, refused credentials, hostile field names."""

from __future__ import annotations

import json
import logging
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fieldstation.errors import ConfigError
from fieldstation.influxd import LocalInfluxd
from fieldstation.mqtt_output import MqttOutputSettings, safe_id, value_template
from fieldstation.reading import Reading
from fieldstation.sensor import Sensor
from fieldstation.sensors.simulated import Simulated
from fieldstation.settings import AgentSettings, load_toml
from harness.agent import running_agent, settings_for, start_agent_process, stored, wait_for
from harness.mosquitto import Mosquitto

PREFIX = "fieldstation/test"
NODE = "fs_test"
CONFIG_TOPIC = re.compile(rf"^homeassistant/(sensor|binary_sensor)/{NODE}/[A-Za-z0-9_-]+/config$")


class Door(Sensor):
    """A device with a bool field and field names that are MQTT wildcards and separators."""

    def read(self) -> dict[str, Any]:
        return {"open": True, "a/b": 1.0, "a+b": 2.0, "c#": 3.0, "state": "ajar"}


class Burst(Sensor):
    """A logger handing over two timestamped values per read, as the mqtt driver does with messages queued."""

    def read(self) -> list[Reading]:
        now = time.time_ns()
        return [Reading("burst", {"n": 1.0}, {}, now - 10**9), Reading("burst", {"n": 2.0}, {}, now)]


class Subscriber:
    """A client subscribed to everything, keeping every message (retained ones flagged)."""

    def __init__(self, broker: Mosquitto) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{id(self)}")
        if broker.tls:
            self.client.tls_set(ca_certs=str(broker.cert))
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe("#", qos=1)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def of(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.messages if t == topic]

    def retained(self) -> dict[str, bytes]:
        with self.lock:
            return {t: p for t, p, r in self.messages if r}

    def configs(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {t: json.loads(p) for t, p, _ in self.messages if t.startswith("homeassistant/") and p}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()  # the socket pair of loop_start(), else closed by the garbage collector


@contextmanager
def subscribed(broker: Mosquitto) -> Iterator[Subscriber]:
    sub = Subscriber(broker)
    try:
        yield sub
    finally:
        sub.close()


def output(broker: Mosquitto, **kw: Any) -> MqttOutputSettings:
    return MqttOutputSettings(host="127.0.0.1", port=broker.port, topic_prefix=PREFIX, node_id=NODE, **kw)


def station_sensors() -> list[Sensor]:
    return [
        Simulated(name="air", fields=["temperature", "humidity"], unit={"temperature": "°C", "humidity": "%"},
                  interval=0.2),
        Simulated(name="meter", fields=["power", "total"], unit={"power": "W", "total": "kWh"}, interval=0.2),
    ]


@pytest.mark.slow
def test_discovery_is_retained_and_states_match_the_readings(
    influxd: LocalInfluxd, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, {"local": influxd.url}, mqtt_output=output(mosquitto))
    with running_agent(settings, station_sensors()) as (agent, emitted), subscribed(mosquitto) as live:
        wait_for(lambda: len(live.of(f"{PREFIX}/air/state")) >= 5, 20, "5 state messages of air")
        with subscribed(mosquitto) as late:  # connects after the announcements: gets them retained
            wait_for(lambda: len(late.configs()) >= 4, 10, "the 4 discovery configs, retained")
            assert late.retained()[f"{PREFIX}/status"] == b"online"
            configs = late.configs()
        with live.lock:
            states = [(t, json.loads(p)) for t, p, _ in live.messages if t.endswith("/state")]
        with_readings = list(emitted)
    # Every state message is exactly the fields of one read of its sensor, with its time.
    by_key: dict[tuple[str, int], dict[str, Any]] = {}
    for r in with_readings:
        by_key.setdefault((r.tags["sensor"], r.time_ns), {}).update(r.fields)
    assert states
    for topic, doc in states:
        sensor = topic.split("/")[-2]
        matching = [fields for (s, t), fields in by_key.items() if s == sensor and _iso(t) == doc["time"]]
        assert matching == [{k: v for k, v in doc.items() if k != "time"}], (topic, doc)
    temperature = configs[f"homeassistant/sensor/{NODE}/air_temperature/config"]
    assert temperature["state_topic"] == f"{PREFIX}/air/state"
    assert temperature["value_template"] == "{{ value_json.temperature }}"
    assert temperature["unique_id"] == f"{NODE}_air_temperature"
    assert temperature["default_entity_id"] == f"sensor.{NODE}_air_temperature"
    assert temperature["availability_topic"] == f"{PREFIX}/status"
    assert temperature["device"]["identifiers"] == [NODE]
    assert temperature["device"]["name"] == NODE
    classes = {t.split("/")[3]: (c.get("device_class"), c.get("unit_of_measurement"), c.get("state_class"))
               for t, c in configs.items()}
    assert classes == {
        "air_temperature": ("temperature", "°C", "measurement"),
        "air_humidity": ("humidity", "%", "measurement"),
        "meter_power": ("power", "W", "measurement"),
        "meter_total": ("energy", "kWh", "total_increasing"),
    }
    assert stored(influxd)  # the durable path is untouched
    assert agent.mqtt_output is not None and agent.mqtt_output.published >= len(states)
    with subscribed(mosquitto) as after:  # a clean stop says so
        wait_for(lambda: after.retained().get(f"{PREFIX}/status") == b"offline", 10, "status offline, retained")


def _iso(time_ns: int) -> str:
    import datetime as dt

    when = dt.datetime.fromtimestamp(time_ns / 1e9, dt.UTC).isoformat(timespec="milliseconds")
    return when.replace("+00:00", "Z")


@pytest.mark.slow
def test_after_a_broker_restart_it_reconnects_announces_again_and_keeps_publishing(
    influxd: LocalInfluxd, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    settings = settings_for(
        tmp_path, {"local": influxd.url}, mqtt_output=output(mosquitto, max_queued=10), health_interval=1
    )
    with running_agent(settings, station_sensors()) as (agent, _):
        out = agent.mqtt_output
        assert out is not None
        with subscribed(mosquitto) as sub:
            wait_for(lambda: len(sub.of(f"{PREFIX}/meter/state")) >= 2, 20, "state messages before the restart")
        mosquitto.stop()
        wait_for(lambda: not out.connected.is_set(), 20, "the output to notice the broker is gone")
        points_before = len(stored(influxd))
        wait_for(lambda: out.dropped > 0, 20, "the oldest state messages dropped beyond max_queued")
        wait_for(lambda: bool(influxd.rows('SELECT max("dropped") FROM "fieldstation_mqtt_output"', "fieldstation")),
                 20, "the drop counted in the health readings")
        mosquitto.start()  # same port; no persistence: the retained configs are gone with the old broker
        with subscribed(mosquitto) as sub:
            # Live or retained, depending on who connected first.
            wait_for(lambda: b"online" in sub.of(f"{PREFIX}/status"), 30, "online again")
            wait_for(lambda: len(sub.configs()) >= 4, 10, "the discovery configs published again")
            wait_for(lambda: len(sub.of(f"{PREFIX}/meter/state")) >= 3, 10, "state messages after the restart")
        wait_for(lambda: len(stored(influxd)) > points_before, 10, "InfluxDB still getting points")
    rows = influxd.rows('SELECT max("dropped") FROM "fieldstation_mqtt_output"', "fieldstation")
    assert rows[0]["max"] > 0


@pytest.mark.slow
def test_refused_credentials_log_one_line_and_the_agent_keeps_storing(
    influxd: LocalInfluxd, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Mosquitto(tmp_path / "mosquitto", passwords={"station": "right-password"})
    broker.start()
    try:
        settings = settings_for(
            tmp_path, {"local": influxd.url}, mqtt_output=output(broker, username="station", password="wrong-password")
        )
        with caplog.at_level(logging.INFO, logger="fieldstation.mqtt_output"), running_agent(
            settings, station_sensors()
        ) as (agent, _):
            wait_for(lambda: broker.log.read_text().count("not authorised") >= 2, 30, "two refused attempts")
            points = len(stored(influxd))
            wait_for(lambda: len(stored(influxd)) > points, 10, "InfluxDB still getting points")
            assert agent.mqtt_output is not None and not agent.mqtt_output.connected.is_set()
    finally:
        broker.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "fieldstation.mqtt_output"]
    assert len(lines) == 1, lines
    assert f"mqtt://127.0.0.1:{broker.port}" in lines[0] and "refused" in lines[0]
    assert "wrong-password" not in caplog.text


@pytest.mark.slow
def test_hostile_field_names_become_safe_topics_and_bools_binary_sensors(
    influxd: LocalInfluxd, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, {"local": influxd.url}, mqtt_output=output(mosquitto))
    with running_agent(settings, [Door(name="door", unit="°C", interval=0.2)]), subscribed(mosquitto) as sub:
        wait_for(lambda: len(sub.configs()) >= 5 and sub.of(f"{PREFIX}/door/state"), 20, "5 configs and a state")
        configs = sub.configs()
        state = json.loads(sub.of(f"{PREFIX}/door/state")[-1])
    assert all(CONFIG_TOPIC.match(t) for t in configs), sorted(configs)
    assert len({c["unique_id"] for c in configs.values()}) == 5  # a/b and a+b stay two entities
    templates = {c["value_template"] for c in configs.values()}
    assert templates == {
        "{{ 'ON' if value_json.open else 'OFF' }}",
        '{{ value_json["a/b"] }}',
        '{{ value_json["a+b"] }}',
        '{{ value_json["c#"] }}',
        "{{ value_json.state }}",
    }
    binary = [t for t in configs if t.startswith("homeassistant/binary_sensor/")]
    assert binary == [f"homeassistant/binary_sensor/{NODE}/door_open/config"]
    assert configs[binary[0]]["default_entity_id"] == f"binary_sensor.{NODE}_door_open"
    assert all(re.fullmatch(r"(binary_)?sensor\.[a-z0-9_]+", c["default_entity_id"]) for c in configs.values())
    assert {k: v for k, v in state.items() if k != "time"} == {"open": True, "a/b": 1.0, "a+b": 2.0, "c#": 3.0,
                                                              "state": "ajar"}
    # A string in °C (the unit is the sensor's, for every field) would be refused by Home Assistant as not numeric.
    text = configs[f"homeassistant/sensor/{NODE}/door_state/config"]
    assert not {"unit_of_measurement", "device_class", "state_class"} & set(text)
    assert configs[f"homeassistant/sensor/{NODE}/door_a_b_{safe_id('a/b')[-6:]}/config"]["device_class"] == "temperature"


# paho-mqtt 2.2 leaves the SSLSocket of a failed handshake to the garbage collector (Client._ssl_wrap_socket raises
# from do_handshake() without closing it): closed at once by refcounting, but Python warns. Only that warning.
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Exception ignored in. <ssl.SSLSocket:pytest.PytestUnraisableExceptionWarning")
def test_over_tls_the_broker_s_certificate_is_checked(influxd: LocalInfluxd, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    broker = Mosquitto(tmp_path / "mosquitto", tls=True)
    broker.start()
    try:
        trusted = output(broker, tls=True, ca_file=broker.cert)
        with running_agent(settings_for(tmp_path / "a", {"local": influxd.url}, mqtt_output=trusted),
                           station_sensors()), subscribed(broker) as sub:
            wait_for(lambda: len(sub.of(f"{PREFIX}/air/state")) >= 2, 20, "state messages over TLS")
        # The system's CAs do not know a self-signed certificate: refused, said once, the agent runs on.
        untrusted = output(broker, tls=True)
        with caplog.at_level(logging.INFO, logger="fieldstation.mqtt_output"), running_agent(
            settings_for(tmp_path / "b", {"local": influxd.url}, mqtt_output=untrusted), station_sensors()
        ) as (agent, _):
            wait_for(lambda: any("CERTIFICATE_VERIFY_FAILED" in r.getMessage() for r in caplog.records), 20,
                     "the certificate refused")
            points = len(stored(influxd))
            wait_for(lambda: len(stored(influxd)) > points, 10, "InfluxDB still getting points")
            assert agent.mqtt_output is not None and not agent.mqtt_output.connected.is_set()
    finally:
        broker.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "fieldstation.mqtt_output"]
    assert len(lines) == 1, lines


@pytest.mark.slow
def test_fieldstation_run_with_mqtt_output_in_agent_toml(influxd: LocalInfluxd, mosquitto: Mosquitto,
                                                          tmp_path: Path) -> None:
    """Where a user starts: agent.toml and config.py files, `fieldstation run`, SIGTERM."""
    (tmp_path / "config.py").write_text(
        "from fieldstation.sensors.simulated import Simulated\n"
        "sensors = [Simulated(name='t', unit='°C', interval=0.2)]\n"
    )
    (tmp_path / "agent.toml").write_text(
        f'config = "{tmp_path / "config.py"}"\nstate_file = "{tmp_path / "state.json"}"\n'
        f'energy_file = "{tmp_path / "energy.json"}"\n'
        f'[spool]\npath = "{tmp_path / "spool.db"}"\n'
        f'[[sinks]]\nname = "local"\nurl = "{influxd.url}"\n'
        f'[mqtt_output]\nhost = "127.0.0.1"\nport = {mosquitto.port}\nnode_id = "{NODE}"\ntopic_prefix = "{PREFIX}"\n'
    )
    log = tmp_path / "agent.log"
    proc = start_agent_process(tmp_path / "agent.toml", log)
    try:
        with subscribed(mosquitto) as sub:
            wait_for(lambda: len(sub.of(f"{PREFIX}/t/state")) >= 3, 30, "state messages from `fieldstation run`")
            config = json.loads(sub.of(f"homeassistant/sensor/{NODE}/t_value/config")[-1])
            assert (config["device_class"], config["unit_of_measurement"]) == ("temperature", "°C")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
            wait_for(lambda: sub.of(f"{PREFIX}/status")[-1:] == [b"offline"], 10, "offline at a clean stop")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "Traceback" not in log.read_text()


@pytest.mark.slow
def test_readings_of_one_read_with_their_own_times_are_one_message_each(
    influxd: LocalInfluxd, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, {"local": influxd.url}, mqtt_output=output(mosquitto))
    with running_agent(settings, [Burst(name="burst", interval=0.2)]) as (_, emitted), subscribed(mosquitto) as sub:
        wait_for(lambda: len(sub.of(f"{PREFIX}/burst/state")) >= 6, 20, "6 state messages")
        states = [json.loads(p) for p in sub.of(f"{PREFIX}/burst/state")]
        readings = {_iso(r.time_ns): r.fields["n"] for r in emitted}
    assert all(readings[doc["time"]] == doc["n"] for doc in states), states
    assert {doc["n"] for doc in states} == {1.0, 2.0}


def test_names_and_templates() -> None:
    assert safe_id("air_temperature") == "air_temperature"
    assert re.fullmatch(r"a_b_[0-9a-f]{6}", safe_id("a/b"))
    assert safe_id("a/b") != safe_id("a+b")
    assert re.fullmatch(r"[A-Za-z0-9_-]+", safe_id("°C # +"))
    assert value_template("x1") == "value_json.x1"
    assert value_template('say "hi"') == r'value_json["say \"hi\""]'


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ('host = "b"\npassword = "x"', "mqtt_output: password needs username"),
        ('host = "b"\ntopic_prefix = "a/+/c"', "mqtt_output.topic_prefix: 'a/+/c' is not a topic prefix"),
        ('host = "b"\ntopic_prefix = "a//c"', "mqtt_output.topic_prefix: 'a//c' is not a topic prefix"),
        ('host = "b"\ndiscovery_prefix = "#"', "mqtt_output.discovery_prefix: '#' is not a topic prefix"),
        ('host = "b"\nnode_id = "my station"', "mqtt_output.node_id: String should match pattern"),
        ('host = "b"\nqos = 3', "mqtt_output.qos: Input should be 0, 1 or 2"),
        ('host = "b"\nca_file = "/etc/ca.pem"', "mqtt_output: ca_file is only used with tls = true"),
        ('port = 1883', "mqtt_output.host: Field required"),
        ('host = "b"\nhots = "c"', "mqtt_output.hots: unknown option"),
    ],
)
def test_bad_settings_are_one_line_naming_the_option(tmp_path: Path, toml: str, problem: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f"[mqtt_output]\n{toml}\n")
    with pytest.raises(ConfigError) as err:
        load_toml(path, AgentSettings)
    assert str(err.value).startswith(f"{path}: {problem}"), str(err.value)
    assert "\n" not in str(err.value)


def test_defaults_name_the_host(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[mqtt_output]\nhost = "broker.lan"\npassword = "s3cret"\nusername = "u"\n')
    settings = load_toml(path, AgentSettings).mqtt_output
    assert settings is not None
    import socket

    assert settings.prefix == f"fieldstation/{safe_id(socket.gethostname())}"
    assert settings.node == f"fieldstation_{safe_id(socket.gethostname())}"
    assert (settings.homeassistant_discovery, settings.discovery_prefix, settings.retain) == (True, "homeassistant", False)
    assert "s3cret" not in repr(settings)
