"""Values from MQTT topics: Tasmota and Shelly devices, Zigbee2MQTT, anything that publishes JSON or plain payloads.

A sensor subscribes to one topic (wildcards allowed) on a broker; every sensor of one broker shares one connection
(paho-mqtt's client, whose network thread reconnects with backoff and on which we subscribe again). Messages are
queued as they arrive, stamped with their arrival time, and decoded by ``read()``:

- ``fields``: JSON paths picked exactly as :mod:`fieldstation.sensors.http_json` picks them;
- ``mapping``: a ready-made table for Tasmota's ``tele/<device>/SENSOR`` and ``STATE`` or Shelly's status topics;
- neither: the plain payload (``21.5``, ``on``) is the field ``value``.

``time`` names a path to the payload's own timestamp (ISO 8601, naive meaning the station's local time, or Unix
seconds or milliseconds); without it a reading carries its arrival time.

A retained message is the broker's last known value: it is taken when the sensor subscribes, unless
``retained="ignore"``, but not again when the broker resends it unchanged after a reconnect. When nothing new has
arrived since the last read, the last readings are returned again with their own timestamps (InfluxDB keeps one
point per series and time, so nothing is doubled), for at most ``max_age`` seconds; after that, or while the broker
is unreachable, the read fails with one line saying why.
"""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import itertools
import json
import math
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator

from fieldstation.reading import FieldValue, Reading
from fieldstation.sensor import Sensor, SensorError, process
from fieldstation.sensors.http_json import PathError, parse_path, pick
from fieldstation.sensors.http_json import decode as decode_paths

if TYPE_CHECKING:
    import paho.mqtt.client as paho

#: Larger payloads are refused as malformed: sensors publish a few hundred bytes.
MAX_PAYLOAD = 1 << 16
#: Messages kept between two reads; older ones go first when a device floods its topic.
MAX_QUEUED = 10_000
#: paho-mqtt's reconnect backoff, seconds: doubled from the first to the last after each failure.
RECONNECT_DELAY = (1, 60)
KEEPALIVE = 30
#: A payload's own time before this is a device clock never set (Tasmota without NTP says 1970); old data a logger
#: sends late is fine.
EARLIEST_NS = 978_307_200 * 10**9  # 2001-01-01
#: Nor may it be further ahead of its arrival than this.
MAX_AHEAD_NS = 86_400 * 10**9

# -- mappings (data tables) ---------------------------------------------------------------------------------------

#: Tasmota ``tele/<device>/SENSOR``: a key inside each sensor object (``"ENERGY"``, ``"DS18B20"``, ``"AM2301"``)
#: → (field suffix, unit). The field is ``<object>_<suffix>`` in lower case: ``energy_power``, ``am2301_humidity``.
#: https://tasmota.github.io/docs/JSON-Status-Responses/
TASMOTA_SENSOR = {
    "Temperature": ("temperature", "°C"),
    "Humidity": ("humidity", "%"),
    "DewPoint": ("dew_point", "°C"),
    "Pressure": ("pressure", "hPa"),
    "SeaPressure": ("sea_pressure", "hPa"),
    "Illuminance": ("illuminance", "lx"),
    "CarbonDioxide": ("co2", "ppm"),
    "Total": ("total", "kWh"),
    "Today": ("today", "kWh"),
    "Yesterday": ("yesterday", "kWh"),
    "Power": ("power", "W"),
    "ApparentPower": ("apparent_power", "VA"),
    "ReactivePower": ("reactive_power", "var"),
    "Factor": ("power_factor", ""),
    "Voltage": ("voltage", "V"),
    "Current": ("current", "A"),
    "Frequency": ("frequency", "Hz"),
}

#: Tasmota ``tele/<device>/STATE``: path → (field, unit). ``POWER``, ``POWER1`` … are ``"ON"``/``"OFF"``.
TASMOTA_STATE = {
    "UptimeSec": ("uptime", "s"),
    "Heap": ("heap", "kB"),
    "LoadAvg": ("load_avg", ""),
    "MqttCount": ("mqtt_count", ""),
    "Dimmer": ("dimmer", "%"),
    "POWER": ("power_on", ""),
    **{f"POWER{n}": (f"power_on_{n}", "") for n in range(1, 9)},
    "Wifi.RSSI": ("wifi_rssi", "%"),
    "Wifi.Signal": ("wifi_signal", "dBm"),
    "Wifi.LinkCount": ("wifi_link_count", ""),
}

#: Shelly Gen2+ status topics (``<device>/status/switch:0``, ``…/pm1:0``, ``…/temperature:0``, ``…/humidity:0``,
#: ``…/devicepower:0``): path → (field, unit). https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/Switch
#: Gen1 devices publish one plain value per topic (``shellies/<id>/relay/0/power``): use no mapping.
SHELLY = {
    "output": ("on", ""),
    "apower": ("power", "W"),
    "voltage": ("voltage", "V"),
    "current": ("current", "A"),
    "freq": ("frequency", "Hz"),
    "pf": ("power_factor", ""),
    "aenergy.total": ("energy_total", "Wh"),
    "ret_aenergy.total": ("energy_returned", "Wh"),
    "temperature.tC": ("temperature", "°C"),
    "tC": ("temperature", "°C"),
    "rh": ("humidity", "%"),
    "lux": ("illuminance", "lx"),
    "battery.percent": ("battery", "%"),
    "battery.V": ("battery_voltage", "V"),
}

Mapping = Literal["tasmota_sensor", "tasmota_state", "shelly"]

#: What the dashboards (and the stale alert, on the first) show of a mapped sensor unless its `limits` or a `unit`
#: mapping name other fields: what the commonest device of the kind sends (a power plug).
DASHBOARD_FIELDS: dict[str, tuple[str, ...]] = {
    "tasmota_sensor": ("energy_power", "energy_voltage", "energy_total"),
    "tasmota_state": ("uptime", "wifi_signal"),
    "shelly": ("power", "voltage", "energy_total"),
}


def mapped_unit(mapping: str | None, field: str) -> str:
    """A mapped field's unit from the tables alone (dashboards are made before any message arrives)."""
    if mapping == "tasmota_sensor":
        base = field.rstrip("0123456789").removesuffix("_") if field[-1:].isdigit() else field
        suffixes = sorted(TASMOTA_SENSOR.values(), key=lambda su: -len(su[0]))
        return next((unit for suffix, unit in suffixes if base.endswith(f"_{suffix}")), "")
    table = {"tasmota_state": TASMOTA_STATE, "shelly": SHELLY}.get(mapping or "", {})
    return next((unit for name, unit in table.values() if name == field), "")
#: Words a plain payload or a mapped string may use for a bool.
BOOLS = {"on": True, "off": False, "true": True, "false": False}

Decoded = tuple[dict[str, FieldValue], dict[str, str]]  # fields, and the unit of each mapped field


class PayloadError(ValueError):
    """A payload that is not what the sensor's options expect."""


def _scalar(value: Any, where: str) -> FieldValue:
    if isinstance(value, str) and value.strip().lower() in BOOLS:
        return BOOLS[value.strip().lower()]
    if isinstance(value, (bool, int, float, str)):
        return value
    raise PayloadError(f"{where} is {type(value).__name__}, not a number, bool or string")


def decode_table(doc: Any, table: dict[str, tuple[str, str]]) -> Decoded:
    """The entries of ``table`` present in ``doc``; absent ones are skipped (devices have what they have)."""
    fields: dict[str, FieldValue] = {}
    units: dict[str, str] = {}
    for path, (name, unit) in table.items():
        try:
            value = pick(doc, path)
        except PathError:
            continue
        fields[name] = _scalar(value, path)
        units[name] = unit
    return fields, units


def decode_tasmota_sensor(doc: Any) -> Decoded:
    """Tasmota's SENSOR telemetry: every known quantity of every sensor object; lists become ``_1``, ``_2`` …"""
    if not isinstance(doc, dict):
        raise PayloadError(f"a Tasmota SENSOR payload is an object, got {type(doc).__name__}")
    temp_unit = "°F" if doc.get("TempUnit") == "F" else "°C"
    pressure_unit = str(doc.get("PressureUnit", "hPa"))
    fields: dict[str, FieldValue] = {}
    units: dict[str, str] = {}
    for obj, values in doc.items():
        if not isinstance(values, dict):
            continue  # "Time", "TempUnit"
        for key, value in values.items():
            if key not in TASMOTA_SENSOR:
                continue
            suffix, unit = TASMOTA_SENSOR[key]
            unit = temp_unit if unit == "°C" else pressure_unit if unit == "hPa" else unit
            name = f"{obj.lower()}_{suffix}"
            items = list(enumerate(value, 1)) if isinstance(value, list) else [(0, value)]
            for i, v in items:
                field = f"{name}_{i}" if i else name
                fields[field] = _scalar(v, f"{obj}.{key}")
                units[field] = unit
    return fields, units


def decode_plain(payload: str) -> dict[str, FieldValue]:
    """A plain payload: a number, or on/off/true/false."""
    text = payload.strip()
    if text.lower() in BOOLS:
        return {"value": BOOLS[text.lower()]}
    try:
        x = float(text)
    except ValueError:
        raise PayloadError(f"payload {text[:40]!r} is not a number or on/off") from None
    if not math.isfinite(x):
        raise PayloadError(f"payload {text[:40]!r} is not a finite number")
    return {"value": x}


def decode_time(value: Any) -> int:
    """A payload's timestamp → ns: Unix seconds or milliseconds, or ISO 8601 (naive: the station's local time)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        exact = decimal.Decimal(str(value))  # 1700000000.123 as written, not as the nearest binary float
        return int(exact * 10**6) if value > 1e11 else int(exact * 10**9)
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            raise PayloadError(f"time {value[:40]!r} is not ISO 8601") from None
        return int(when.astimezone().timestamp() * 1e9)
    raise PayloadError(f"time is {type(value).__name__}, not Unix seconds or an ISO 8601 string")


def clock_problem(payload_ns: int | None, arrived_ns: int) -> str | None:
    """Why a payload's own time cannot be the time of its reading, or None."""
    if payload_ns is None:
        return None
    if payload_ns < EARLIEST_NS or payload_ns - arrived_ns > MAX_AHEAD_NS:
        when = dt.datetime.fromtimestamp(payload_ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"the payload's time {when} is wrong: the device's clock is not set (leave `time` unset)"
    return None


def _display(broker: str, port: int) -> str:
    return f"mqtt://[{broker}]:{port}" if ":" in broker else f"mqtt://{broker}:{port}"


# -- the shared connection ----------------------------------------------------------------------------------------

_serial = itertools.count(1)


class _Connection:
    """One paho client per broker (and user), shared by the sensors subscribed through it."""

    def __init__(self, broker: str, port: int, username: str | None, password: str | None) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.where = _display(broker, port)
        self.lock = threading.Lock()
        self.subs: dict[str, list[Mqtt]] = {}
        self.users = 0
        self.connected = threading.Event()
        self.problem = "connecting"
        client_id = f"fieldstation-{socket.gethostname()}-{os.getpid()}-{next(_serial)}"
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(*RECONNECT_DELAY)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.waiting: dict[int, list[Mqtt]] = {}  # SUBSCRIBE message id → the sensors waiting for its SUBACK
        self.acked: set[int] = set()
        self.client.connect_async(broker, port, keepalive=KEEPALIVE)
        self.client.loop_start()  # its thread retries a failed first connection too

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self.problem = f"the broker refused the connection: {reason}"
            return
        self.problem = ""
        # Under the lock with add(): a sensor added meanwhile is subscribed either here or there, never by neither.
        with self.lock:
            self.connected.set()
            for topic, sensors in self.subs.items():  # a clean session forgets them: again after every reconnect
                self._subscribe(topic, sensors)

    def _subscribe(self, topic: str, sensors: list[Mqtt]) -> None:
        """With the lock held: SUBSCRIBE, and tell the sensors when the broker acknowledges it."""
        _, mid = self.client.subscribe(topic)
        if mid is None:  # the connection dropped in between: on_connect subscribes again
            return
        if mid in self.acked:
            self.acked.discard(mid)
            for sensor in sensors:
                sensor._subscribed.set()
        else:
            self.waiting[mid] = list(sensors)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        with self.lock:
            sensors = self.waiting.pop(mid, None)
            if sensors is None:
                self.acked.add(mid)  # acknowledged before _subscribe noted it
                return
        for sensor in sensors:
            sensor._subscribed.set()

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self.problem = "cannot reach the broker"

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connected.clear()
        self.problem = f"connection lost ({reason})"

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        import paho.mqtt.client as paho

        arrived = time.time_ns()
        with self.lock:
            targets = [s for sub, ss in self.subs.items() if paho.topic_matches_sub(sub, msg.topic) for s in ss]
        for sensor in targets:
            sensor._arrived(msg.topic, bytes(msg.payload), bool(msg.retain), arrived)

    def add(self, sensor: Mqtt) -> None:
        with self.lock:
            self.subs.setdefault(sensor.topic, []).append(sensor)
            if self.connected.is_set():
                # Even when the topic is subscribed already: subscribing again makes the broker send its retained
                # message, which the new sensor wants; the others drop the copy as one they have.
                self._subscribe(sensor.topic, [sensor])

    def remove(self, sensor: Mqtt) -> None:
        with self.lock:
            ss = self.subs.get(sensor.topic, [])
            if sensor in ss:
                ss.remove(sensor)
            last = not ss
            if last:
                self.subs.pop(sensor.topic, None)
        if last and self.connected.is_set():
            self.client.unsubscribe(sensor.topic)

    def stop(self) -> None:
        self.client.disconnect()
        # loop_stop joins paho's thread, which may sleep up to a second in its reconnect backoff: not on the
        # caller's time (close() runs within the scheduler's timeout).
        threading.Thread(target=self._loop_stop, name=f"mqtt-stop {self.where}", daemon=True).start()

    def _loop_stop(self) -> None:
        self.client.loop_stop()
        # loop_start() opened a socket pair to wake paho's thread, which only Client.__del__ closes (paho-mqtt 2.2).
        self.client._reset_sockets()


_connections: dict[tuple[str, int, str | None], _Connection] = {}
_connections_lock = threading.Lock()


def _acquire(sensor: Mqtt) -> _Connection:
    key = (sensor.broker, sensor.port, sensor.username)
    with _connections_lock:
        conn = _connections.get(key)
        if conn is None:
            password = sensor.password.get_secret_value() if sensor.password is not None else None
            conn = _connections[key] = _Connection(sensor.broker, sensor.port, sensor.username, password)
        conn.users += 1
    conn.add(sensor)
    return conn


def _release(sensor: Mqtt, conn: _Connection) -> None:
    conn.remove(sensor)
    with _connections_lock:
        conn.users -= 1
        if conn.users > 0:
            return
        _connections.pop((sensor.broker, sensor.port, sensor.username), None)
    conn.stop()


def connection_count() -> int:
    """Open broker connections of this process (for ``status`` and tests)."""
    with _connections_lock:
        return len(_connections)


# -- the sensor ---------------------------------------------------------------------------------------------------


class Mqtt(Sensor):
    """The messages of one topic on an MQTT broker."""

    driver: ClassVar[str] = "mqtt"
    requires: ClassVar[tuple[str, ...]] = ("paho.mqtt.client",)

    topic: str = Field(description="Topic to subscribe to; + and # wildcards add a `topic` tag.")
    broker: str = Field("127.0.0.1", description="The broker's address.")
    port: int = Field(1883, ge=1, le=65535, description="The broker's port.")
    username: str | None = Field(None, description="User name, if the broker asks for one.")
    password: SecretStr | None = Field(None, description="Its password (from the vault).")
    fields: dict[str, str] = Field(default_factory=dict, description="Field name → path into a JSON payload.")
    mapping: Mapping | None = Field(None, description="A ready-made table: tasmota_sensor, tasmota_state, shelly.")
    time: str | None = Field(None, description="Path to the payload's timestamp; default: the arrival time.")
    retained: Literal["read", "ignore"] = Field("read", description="read: take the broker's retained value.")
    max_age: float = Field(900.0, gt=0, description="Seconds the last message is repeated while nothing new comes.")

    _queue: collections.deque[tuple[str, bytes, bool, int]] = PrivateAttr(
        default_factory=lambda: collections.deque(maxlen=MAX_QUEUED)
    )
    _latest: dict[str, bytes] = PrivateAttr(default_factory=dict)
    _units: dict[str, str] = PrivateAttr(default_factory=dict)
    _conn: _Connection | None = PrivateAttr(default=None)
    _last: list[Reading] = PrivateAttr(default_factory=list)
    _last_at: float = PrivateAttr(default=0.0)
    _pending: list[str] = PrivateAttr(default_factory=list)
    _malformed: int = PrivateAttr(default=0)
    _subscribed: threading.Event = PrivateAttr(default_factory=threading.Event)

    @field_validator("topic")
    @classmethod
    def _topic_valid(cls, v: str) -> str:
        parts = v.split("/")
        bad = not v or "\0" in v or any(("#" in p and (p != "#" or i != len(parts) - 1)) for i, p in enumerate(parts))
        if bad or any("+" in p and p != "+" for p in parts):
            raise ValueError(f"topic {v!r}: + must fill a whole level and # must be the last level")
        return v

    @field_validator("fields")
    @classmethod
    def _paths_parse(cls, v: dict[str, str]) -> dict[str, str]:
        for path in v.values():
            parse_path(path)
        return v

    @field_validator("time")
    @classmethod
    def _time_parses(cls, v: str | None) -> str | None:
        if v is not None:
            parse_path(v)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Mqtt:
        if self.fields and self.mapping is not None:
            raise ValueError("give fields or mapping, not both")
        if self.password is not None and self.username is None:
            raise ValueError("password needs username: MQTT sends no password without a user name")
        return self

    @property
    def bus(self) -> str:
        # Reads only take queued messages; one thread per broker is plenty.
        return _display(self.broker, self.port)

    @property
    def malformed(self) -> int:
        """Messages refused since start (not JSON, a path not found, a value not a number)."""
        return self._malformed

    def declared_fields(self) -> list[str] | None:
        if self.fields:
            return list(self.fields)
        return ["value"] if self.mapping is None else None

    def dashboard_fields(self) -> list[str]:
        if self.fields:
            return list(self.fields)
        if self.mapping is None:
            return ["value"]
        if (isinstance(self.unit, dict) and self.unit) or self.limits:
            return super().dashboard_fields()  # the fields the user named
        return list(DASHBOARD_FIELDS[self.mapping])

    def unit_of(self, field_name: str) -> str:
        own = self.unit if isinstance(self.unit, str) else self.unit.get(field_name, "")
        return own or self._units.get(field_name) or mapped_unit(self.mapping, field_name)

    # -- decoding (pure apart from the units it learns) -------------------------------------------------------

    def decode(self, payload: bytes) -> tuple[dict[str, FieldValue], int | None]:
        """A payload → (fields, the payload's own time in ns or None); ``PayloadError`` or ``PathError``."""
        if len(payload) > MAX_PAYLOAD:
            raise PayloadError(f"payload of {len(payload)} bytes, more than {MAX_PAYLOAD}")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError(f"payload is not UTF-8 text: {payload[:20]!r}") from None
        if not self.fields and self.mapping is None and self.time is None:
            return decode_plain(text), None
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[…" nested deeper than Python recurses
            raise PayloadError(f"payload is not JSON ({exc}): {text[:40]!r}") from None
        if self.fields:
            fields = decode_paths(doc, self.fields)
        elif self.mapping is None:
            fields = {"value": _scalar(doc, "the payload")}
        else:
            if self.mapping == "tasmota_sensor":
                fields, units = decode_tasmota_sensor(doc)
            else:
                fields, units = decode_table(doc, TASMOTA_STATE if self.mapping == "tasmota_state" else SHELLY)
            if not fields:
                keys = ", ".join(sorted(doc)[:10]) if isinstance(doc, dict) else type(doc).__name__
                raise PayloadError(f"no {self.mapping} value in the payload (keys: {keys or 'none'})")
            self._units.update(units)
        return fields, (decode_time(pick(doc, self.time)) if self.time is not None else None)

    # -- the contract ----------------------------------------------------------------------------------------

    def _arrived(self, topic: str, payload: bytes, retain: bool, arrived_ns: int) -> None:
        """On paho's thread: queue a message."""
        if retain and (self.retained == "ignore" or self._latest.get(topic) == payload):
            return  # unwanted, or the broker resending what we already have after a reconnect
        self._latest[topic] = payload
        self._queue.append((topic, payload, retain, arrived_ns))

    def _where(self) -> str:
        return f"{_display(self.broker, self.port)} {self.topic}"

    def open(self) -> None:
        if self._conn is None:
            self._conn = _acquire(self)
        conn = self._conn
        wait = min(0.8 * self.read_timeout, 5.0)
        deadline = time.monotonic() + wait
        if not conn.connected.wait(wait):
            problem = conn.problem
            self.close()
            raise SensorError(f"{self._where()}: not connected within {wait:g} s: {problem}")
        # Subscribed once the broker says so: what is published from then on, and the retained message, reach us.
        if not self._subscribed.wait(max(deadline - time.monotonic(), 0.0)):
            self.close()
            raise SensorError(f"{self._where()}: the broker did not acknowledge the subscription within {wait:g} s")

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._subscribed.clear()
        if conn is not None:
            _release(self, conn)

    def _problem(self, text: str) -> None:
        self._malformed += 1
        self._pending.append(text)

    def _raise_pending(self) -> None:
        problems, self._pending = self._pending, []
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SensorError(problems[0] + more, reopen=False)

    def read(self) -> list[Reading]:
        conn = self._conn
        if conn is None:
            raise SensorError(f"{self._where()}: not subscribed")
        if self._pending:  # problems found next to good readings, which the last read returned first
            self._raise_pending()
        readings = self._take_queued()
        if self._pending and not readings:
            self._raise_pending()
        if readings:
            self._last, self._last_at = readings, time.monotonic()
            return [Reading(r.measurement, dict(r.fields), dict(r.tags), r.time_ns) for r in readings]
        if not conn.connected.is_set():
            raise SensorError(f"{self._where()}: not connected: {conn.problem}; reconnecting", reopen=False)
        age = time.monotonic() - self._last_at
        if self._last and age <= self.max_age:
            return [Reading(r.measurement, dict(r.fields), dict(r.tags), r.time_ns) for r in self._last]
        if self._last:
            raise SensorError(f"{self._where()}: no message for {age:.0f} s (max_age {self.max_age:g} s)", reopen=False)
        raise SensorError(f"{self._where()}: no message yet", reopen=False)

    def _take_queued(self) -> list[Reading]:
        """The readings of the messages queued since the last read; their problems go to ``_pending``."""
        readings: list[Reading] = []
        wildcard = "+" in self.topic or "#" in self.topic
        while self._queue:
            topic, payload, _, arrived_ns = self._queue.popleft()
            try:
                fields, payload_ns = self.decode(payload)
            except (PayloadError, PathError) as exc:
                self._problem(f"{_display(self.broker, self.port)} {topic}: {exc}")
                continue
            problem = clock_problem(payload_ns, arrived_ns)
            if problem is not None:
                self._problem(f"{_display(self.broker, self.port)} {topic}: {problem}")
                continue
            processed = process(self, fields, payload_ns or arrived_ns)
            for problem in processed.invalid:
                self._problem(f"{_display(self.broker, self.port)} {topic}: {problem}")
            for r in processed.readings:
                if wildcard:
                    r.tags["topic"] = topic
            readings += processed.readings
        return readings
