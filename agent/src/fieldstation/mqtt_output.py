"""Readings out to an MQTT broker, with Home Assistant discovery: a Home Assistant next door sees the sensors.

Optional (``[mqtt_output]`` in agent.toml) and best effort: InfluxDB and the spool are the durable path. Each read of
a sensor becomes one JSON object of its fields (and ``time``) on ``<topic_prefix>/<sensor>/state``. Messages wait in a
bounded queue for a publisher thread; while the broker is away the oldest go first, counted in ``dropped``.

On every (re)connect the output says ``online`` on ``<topic_prefix>/status`` (retained; the broker says ``offline``
for us when the connection dies, the last will) and, with ``homeassistant_discovery``, publishes a retained config
for each field it knows (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery): the fields the sensors
declare, and any field the first time it is seen. A bool field is a ``binary_sensor``, the rest are ``sensor``s
whose device class comes from their unit (:data:`UNIT_CLASSES`).
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from fieldstation import __version__
from fieldstation.reading import FieldValue, Reading

if TYPE_CHECKING:
    import paho.mqtt.client as paho

    from fieldstation.sensor import Sensor

log = logging.getLogger("fieldstation.mqtt_output")

#: paho-mqtt's reconnect backoff, seconds: doubled from the first to the last after each failure.
RECONNECT_DELAY = (1, 60)
KEEPALIVE = 30
#: Seconds a clean stop waits for the broker to take the last ``offline``.
STOP_TIMEOUT = 3.0

#: Our unit → (Home Assistant's unit_of_measurement, device_class, state_class); a unit not here is passed as it is,
#: without a device class. https://developers.home-assistant.io/docs/core/entity/sensor/#available-device-classes
UNIT_CLASSES: dict[str, tuple[str, str | None, str]] = {
    "°C": ("°C", "temperature", "measurement"),
    "°F": ("°F", "temperature", "measurement"),
    "K": ("K", "temperature", "measurement"),
    "%RH": ("%", "humidity", "measurement"),
    "% RH": ("%", "humidity", "measurement"),
    "W": ("W", "power", "measurement"),
    "kW": ("kW", "power", "measurement"),
    "VA": ("VA", "apparent_power", "measurement"),
    "var": ("var", "reactive_power", "measurement"),
    "Wh": ("Wh", "energy", "total_increasing"),
    "kWh": ("kWh", "energy", "total_increasing"),
    "V": ("V", "voltage", "measurement"),
    "mV": ("mV", "voltage", "measurement"),
    "A": ("A", "current", "measurement"),
    "mA": ("mA", "current", "measurement"),
    "Hz": ("Hz", "frequency", "measurement"),
    "hPa": ("hPa", "pressure", "measurement"),
    "mbar": ("mbar", "pressure", "measurement"),
    "Pa": ("Pa", "pressure", "measurement"),
    "lx": ("lx", "illuminance", "measurement"),
    "dBm": ("dBm", "signal_strength", "measurement"),
}
#: A field in % is humidity or a battery's charge when a word of its name says so (``humidity``, ``am2301_humidity``,
#: ``battery``); other percentages (a dimmer, Wi-Fi quality) get no device class.
PERCENT_CLASSES = {"humidity": "humidity", "rh": "humidity", "battery": "battery"}

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def safe_id(name: str) -> str:
    """``name`` as one topic level and Home Assistant id: [A-Za-z0-9_-] only. A name that had to change gets a short
    hash of itself appended, so that ``a/b`` and ``a+b`` stay two entities."""
    safe = _UNSAFE.sub("_", name)
    if safe == name and name:
        return name
    return f"{safe}_{hashlib.blake2s(name.encode('utf-8', 'surrogatepass'), digest_size=3).hexdigest()}"


def value_template(field: str) -> str:
    """The Jinja expression that takes ``field`` out of the state JSON (brackets for names that are no identifier)."""
    return f"value_json.{field}" if _IDENTIFIER.match(field) else f"value_json[{json.dumps(field)}]"


def _topic_valid(v: str) -> str:
    if not v or v.startswith("/") or v.endswith("/") or "//" in v or any(c in v for c in "+#\0"):
        raise ValueError(f"{v!r} is not a topic prefix: no wildcards (+ #), no empty levels")
    return v


class MqttOutputSettings(BaseModel):
    """``[mqtt_output]`` in agent.toml: the broker the readings are published to."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, description="The broker's address.")
    port: int = Field(1883, ge=1, le=65535, description="The broker's port (8883 is the usual one with tls).")
    username: str | None = Field(None, description="User name, if the broker asks for one.")
    password: SecretStr | None = Field(None, description="Its password (from the vault).")
    tls: bool = Field(False, description="TLS to the broker, its certificate checked against ca_file or the system's.")
    ca_file: Path | None = Field(None, description="CA certificate(s) of the broker (PEM); default: the system's.")
    topic_prefix: str = Field("", description="State and status topics go under it; default fieldstation/<hostname>.")
    qos: Literal[0, 1, 2] = Field(0, description="QoS of the state messages (status and discovery use 1).")
    retain: bool = Field(False, description="Retain the state messages: a new subscriber gets the last reading.")
    homeassistant_discovery: bool = Field(True, description="Publish Home Assistant discovery configs (retained).")
    discovery_prefix: str = Field("homeassistant", description="Home Assistant's discovery prefix.")
    node_id: str = Field(
        "", pattern=r"^[A-Za-z0-9_-]*$", description="Names the station's device in Home Assistant; default its host."
    )
    max_queued: int = Field(1000, ge=10, le=1_000_000, description="Messages kept while the broker is away; oldest go.")

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_valid(cls, v: str) -> str:
        return _topic_valid(v) if v else v

    @field_validator("discovery_prefix")
    @classmethod
    def _discovery_prefix_valid(cls, v: str) -> str:
        return _topic_valid(v)

    @model_validator(mode="after")
    def _consistent(self) -> MqttOutputSettings:
        if self.password is not None and self.username is None:
            raise ValueError("password needs username: MQTT sends no password without a user name")
        if self.ca_file is not None and not self.tls:
            raise ValueError("ca_file is only used with tls = true")
        try:
            import paho.mqtt.client  # noqa: F401  (the mqtt extra)
        except ImportError:
            raise ValueError("needs paho-mqtt: install the agent's mqtt extra (fieldstation[mqtt])") from None
        return self

    @property
    def prefix(self) -> str:
        return self.topic_prefix or f"fieldstation/{safe_id(socket.gethostname())}"

    @property
    def node(self) -> str:
        return self.node_id or f"fieldstation_{safe_id(socket.gethostname())}"


@dataclass(frozen=True)
class Entity:
    """What Home Assistant is told about one field."""

    unit: str
    binary: bool
    #: The value seen is a string: no unit, device or state class (Home Assistant would refuse it as not numeric).
    text: bool = False


@dataclass
class State:
    """One read of one sensor, as published."""

    sensor: str
    fields: dict[str, FieldValue]
    units: dict[str, str]
    time_ns: int


def _known_fields(sensor: Sensor) -> list[str]:
    """The fields a sensor will have before it is read: those it declares, else those its dashboards show when its
    driver or its ``unit`` mapping names them (not the base class's guess ``value``: that would be an entity that
    may never get a value). Fields not known here are announced when first seen."""
    from fieldstation.sensor import Sensor

    declared = sensor.declared_fields()
    if declared is not None:
        return declared
    own = type(sensor).dashboard_fields is not Sensor.dashboard_fields
    return sensor.dashboard_fields() if own or (isinstance(sensor.unit, dict) and sensor.unit) else []


def _where(host: str, port: int) -> str:
    return f"mqtt://[{host}]:{port}" if ":" in host else f"mqtt://{host}:{port}"


class MqttOutput:
    """The publisher: ``put`` from the agent's emit, a thread publishing, paho's thread keeping the connection."""

    def __init__(self, settings: MqttOutputSettings, sensors: list[Sensor]) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.settings = settings
        self.where = _where(settings.host, settings.port)
        self.prefix = settings.prefix
        self.node = settings.node
        self.status_topic = f"{self.prefix}/status"
        self.published = 0
        self.dropped = 0
        self.connected = threading.Event()
        self.problem = "connecting"
        self._queue: collections.deque[State] = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self._announce = False
        self._logged_problem = ""
        #: (sensor, field) → what Home Assistant was or will be told; on the publisher thread only.
        self._entities: dict[tuple[str, str], Entity] = {}
        for sensor in sensors:
            for field in _known_fields(sensor):
                self._entities[(sensor.name, field)] = Entity(sensor.unit_of(field), binary=False)
        client_id = f"fieldstation-out-{safe_id(socket.gethostname())}-{os.getpid()}"
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        if settings.username is not None:
            password = settings.password.get_secret_value() if settings.password is not None else None
            self.client.username_pw_set(settings.username, password)
        if settings.tls:
            import ssl

            self.client.tls_set_context(ssl.create_default_context(cafile=settings.ca_file))
        self.client.will_set(self.status_topic, "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(*RECONNECT_DELAY)
        self.client.max_queued_messages_set(settings.max_queued)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self._thread = threading.Thread(target=self._publish_loop, name="mqtt-output", daemon=True)

    # -- paho's thread ---------------------------------------------------------------------------------------------

    def _trouble(self, problem: str, *, new_only: bool = False) -> None:
        """One log line when a problem starts or changes, not one per retry; ``new_only``: not when it changes."""
        self.problem = problem
        if problem != self._logged_problem and not (new_only and self._logged_problem):
            self._logged_problem = problem
            log.error("mqtt_output %s: %s; readings are still stored, retrying", self.where, problem)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._trouble(f"the broker refused the connection: {reason}")
            return
        if self._logged_problem:
            log.info("mqtt_output %s: connected", self.where)
        self._logged_problem = self.problem = ""
        with self._cond:
            self.connected.set()
            self._announce = True
            self._cond.notify()

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # paho calls this from inside its `except OSError`, and does not pass the error on: it is the one being handled
        # (a refused TCP connection, a certificate that does not verify).
        exc = sys.exc_info()[1]
        problem = f"cannot reach the broker: {exc}" if exc is not None else "cannot reach the broker"
        self._trouble(problem, new_only=True)  # after "connection lost": the same outage, no second line

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if was_connected and not self._stop:  # a refused CONNACK ends in here too: said already
            self._trouble(f"connection lost ({reason})")

    # -- the agent's side ------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=KEEPALIVE)
        self.client.loop_start()  # its thread retries a failed first connection too

    def put(self, readings: list[Reading]) -> None:
        """Queue one read's readings, one message per sensor and time (a read of the mqtt driver may return several
        messages' readings, each with its own time); never blocks."""
        states: dict[tuple[str, int], State] = {}
        for r in readings:
            sensor = r.tags.get("sensor", "")
            st = states.setdefault((sensor, r.time_ns), State(sensor, {}, {}, r.time_ns))
            st.fields.update(r.fields)
            st.units.update(dict.fromkeys(r.fields, r.tags.get("unit", "")))
        with self._cond:
            for st in states.values():
                if len(self._queue) >= self.settings.max_queued:
                    self._queue.popleft()
                    self.dropped += 1
                self._queue.append(st)
            self._cond.notify()

    def stop(self) -> None:
        """Say ``offline``, disconnect and stop both threads (what is still queued is dropped, counted)."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(10)
        if self.connected.is_set():
            info = self.client.publish(self.status_topic, "offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):  # the connection went meanwhile: the will says it
                info.wait_for_publish(STOP_TIMEOUT)
        self.client.disconnect()
        self.client.loop_stop()
        # loop_start() opened a socket pair to wake paho's thread, which only Client.__del__ closes (paho-mqtt 2.2):
        # the agent's objects live in reference cycles, so that would wait for the garbage collector.
        self.client._reset_sockets()
        self.dropped += len(self._queue)
        self._queue.clear()

    # -- the publisher thread --------------------------------------------------------------------------------------

    def _publish_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._stop or (self.connected.is_set() and (self._announce or bool(self._queue)))
                )
                if self._stop:
                    return
                announce, self._announce = self._announce, False
                batch = list(self._queue)
                self._queue.clear()
            try:
                if announce:
                    self._send_announcements()
                for st in batch:
                    self._send_state(st)
            except Exception:
                log.exception("mqtt_output %s: publishing failed", self.where)

    def _publish(self, topic: str, payload: str, qos: int, retain: bool) -> bool:
        import paho.mqtt.client as paho

        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == paho.MQTT_ERR_SUCCESS

    def _send_announcements(self) -> None:
        self._publish(self.status_topic, "online", 1, True)
        if self.settings.homeassistant_discovery:
            for (sensor, field), entity in list(self._entities.items()):
                self._publish_config(sensor, field, entity)

    def _send_state(self, st: State) -> None:
        if self.settings.homeassistant_discovery:
            for field, value in st.fields.items():
                entity = Entity(st.units.get(field, ""), binary=isinstance(value, bool), text=isinstance(value, str))
                old = self._entities.get((st.sensor, field))
                if old != entity:
                    if old is not None and old.binary != entity.binary:
                        self._publish(self._config_topic(st.sensor, field, old), "", 1, True)  # the other kind goes
                    self._entities[(st.sensor, field)] = entity
                    self._publish_config(st.sensor, field, entity)
        when = dt.datetime.fromtimestamp(st.time_ns / 1e9, dt.UTC).isoformat(timespec="milliseconds")
        payload = json.dumps({**st.fields, "time": when.replace("+00:00", "Z")}, ensure_ascii=False)
        if self._publish(self.state_topic(st.sensor), payload, self.settings.qos, self.settings.retain):
            self.published += 1
        else:
            with self._cond:
                self.dropped += 1  # the connection went between the check and the publish

    def state_topic(self, sensor: str) -> str:
        return f"{self.prefix}/{safe_id(sensor)}/state"

    def _config_topic(self, sensor: str, field: str, entity: Entity) -> str:
        component = "binary_sensor" if entity.binary else "sensor"
        return f"{self.settings.discovery_prefix}/{component}/{self.node}/{safe_id(sensor)}_{safe_id(field)}/config"

    def discovery_config(self, sensor: str, field: str, entity: Entity) -> dict[str, Any]:
        """The Home Assistant discovery payload of one field."""
        expr = value_template(field)
        unique_id = f"{self.node}_{safe_id(sensor)}_{safe_id(field)}"
        component = "binary_sensor" if entity.binary else "sensor"
        config: dict[str, Any] = {
            "name": f"{sensor} {field}",
            "unique_id": unique_id,
            # The entity id Home Assistant starts from (its object_id before 2025.10, which 2026.4 no longer reads):
            # lower case, digits and _ only.
            "default_entity_id": f"{component}.{unique_id.lower().replace('-', '_')}",
            "state_topic": self.state_topic(sensor),
            "availability_topic": self.status_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": {
                "identifiers": [self.node],
                "name": self.settings.node_id or socket.gethostname(),
                "manufacturer": "Fieldstation",
                "model": "fieldstation agent",
                "sw_version": __version__,
            },
        }
        if entity.binary:
            config["value_template"] = f"{{{{ 'ON' if {expr} else 'OFF' }}}}"
            return config
        config["value_template"] = f"{{{{ {expr} }}}}"
        if entity.unit and not entity.text:
            unit, device_class, state_class = UNIT_CLASSES.get(entity.unit, (entity.unit, None, "measurement"))
            if entity.unit == "%":
                words = re.split(r"[^a-z0-9]+", field.lower())
                device_class = next((c for w, c in PERCENT_CLASSES.items() if w in words), None)
            config["unit_of_measurement"] = unit
            config["state_class"] = state_class
            if device_class is not None:
                config["device_class"] = device_class
        return config

    def _publish_config(self, sensor: str, field: str, entity: Entity) -> None:
        payload = json.dumps(self.discovery_config(sensor, field, entity), ensure_ascii=False)
        self._publish(self._config_topic(sensor, field, entity), payload, 1, True)

    def health_readings(self, time_ns: int) -> list[Reading]:
        fields: dict[str, FieldValue] = {
            "published": self.published,
            "dropped": self.dropped,
            "connected": self.connected.is_set(),
        }
        return [Reading("fieldstation_mqtt_output", fields, {"sensor": "agent", "unit": "count"}, time_ns)]

