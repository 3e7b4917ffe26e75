"""Modbus RTU and TCP energy meters (and anything else that keeps numbers in registers).

A meter model is a register-map data file (``modbus_maps/<model>.toml``, or a path to your own): per field its
unit, function (holding or input registers), address, data type, word and byte order and scale. A new model is a
new file, not new code. The driver plans the fewest requests that cover the map (contiguous registers in one
request of at most 125), reads them through the shared bus owner in :mod:`fieldstation.modbus_client`, and decodes
with pymodbus's own conversions.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from fieldstation.sensor import Sensor, SensorError

Function = Literal["holding", "input"]
DataType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64"]
Order = Literal["big", "little"]

#: Registers per data type.
WIDTH: dict[str, int] = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4}
#: Modbus function code of each register kind.
FUNCTION_CODE: dict[str, int] = {"holding": 3, "input": 4}

MAPS_PACKAGE = "fieldstation.sensors.modbus_maps"
Address = Annotated[int, Field(ge=0, le=0xFFFF)]


class Register(BaseModel):
    """One field of a register map."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    unit: str = ""
    function: Function = "holding"
    address: Address
    type: DataType = "uint16"
    word_order: Order = "big"
    byte_order: Order = "big"
    scale: float = 1.0

    @property
    def width(self) -> int:
        return WIDTH[self.type]


class SerialDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1


class Protocol(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_registers: int = Field(125, ge=1, le=125)
    max_gap: int = Field(0, ge=0, le=124)


class RegisterMap(BaseModel):
    """A meter model: a register-map file."""

    model: str
    serial: SerialDefaults = SerialDefaults()
    protocol: Protocol = Protocol()
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    registers: list[Register] = Field(min_length=1, alias="register")  # `[[register]]` tables in the file

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("defaults"), dict):
            defaults = data.pop("defaults")
            data["register"] = [{**defaults, **r} for r in data.get("register", [])]
        return data

    @model_validator(mode="after")
    def _no_overlaps(self) -> RegisterMap:
        seen: dict[tuple[str, int], str] = {}
        names: set[str] = set()
        for r in self.registers:
            if r.field in names:
                raise ValueError(f"field {r.field!r} appears twice")
            names.add(r.field)
            for a in range(r.address, r.address + r.width):
                other = seen.get((r.function, a))
                if other is not None:
                    raise ValueError(f"{r.field!r} overlaps {other!r} at {r.function} register 0x{a:04X}")
                seen[(r.function, a)] = r.field
        return self


def builtin_maps() -> list[str]:
    """Names of the maps shipped with Fieldstation."""
    files = resources.files(MAPS_PACKAGE).iterdir()
    return sorted(p.name.removesuffix(".toml") for p in files if p.name.endswith(".toml"))


def load_map(model: str) -> RegisterMap:
    """A shipped map by name (``orno_we515``) or a map file by path; one-line errors."""
    if "/" in model or model.endswith(".toml"):
        path = Path(model)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"register map {model}: {exc.strerror}") from None
    else:
        resource = resources.files(MAPS_PACKAGE) / f"{model}.toml"
        if not resource.is_file():
            raise ValueError(f"unknown meter model {model!r}; shipped maps: {', '.join(builtin_maps())}")
        text = resource.read_text(encoding="utf-8")
    try:
        return RegisterMap.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"register map {model}: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = " ".join(f"#{p + 1}" if isinstance(p, int) else str(p) for p in err["loc"])  # register #2 type
        raise ValueError(f"register map {model}: {where}: {err['msg']}") from None


# -- request planning --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """One read request: ``count`` registers from ``address``, covering ``registers``."""

    function: Function
    address: int
    count: int
    registers: tuple[Register, ...]


def plan(registers: list[Register], max_registers: int = 125, max_gap: int = 0) -> list[Request]:
    """The fewest requests covering ``registers``: neighbours (at most ``max_gap`` unused registers apart) share a
    request of at most ``max_registers``."""
    requests: list[Request] = []
    for function in ("holding", "input"):
        todo = sorted((r for r in registers if r.function == function), key=lambda r: r.address)
        group: list[Register] = []
        start = end = 0
        for r in todo:
            r_end = r.address + r.width
            if group and r.address - end <= max_gap and r_end - start <= max_registers:
                group.append(r)
                end = max(end, r_end)
                continue
            if group:
                requests.append(Request(function, start, end - start, tuple(group)))
            group, start, end = [r], r.address, r_end
        if group:
            requests.append(Request(function, start, end - start, tuple(group)))
    return requests


# -- decoding ----------------------------------------------------------------------------------------


def _swap_bytes(registers: list[int]) -> list[int]:
    return [((w & 0xFF) << 8) | (w >> 8) for w in registers]


def decode_register(r: Register, words: list[int]) -> float:
    from fieldstation.modbus_client import convert

    if r.byte_order == "little":
        words = _swap_bytes(words)
    return scaled(convert(words, r.type, r.word_order), r.scale)


def scaled(raw: float, scale: float) -> float:
    """``raw × scale`` without binary noise for decimal scales: 950 × 0.001 is 0.95, not 0.9500000000000001."""
    inverse = 1 / scale
    if scale < 1 and abs(inverse - round(inverse)) < 1e-9:
        return raw / round(inverse)
    return raw * scale


def decode(requests: list[Request], answers: list[list[int]]) -> dict[str, float]:
    """The registers each request returned → one value per field."""
    fields: dict[str, float] = {}
    for req, words in zip(requests, answers, strict=True):
        for r in req.registers:
            offset = r.address - req.address
            fields[r.field] = decode_register(r, words[offset : offset + r.width])
    return fields


def encode_register(r: Register, value: float) -> list[int]:
    """A value → the registers a meter would hold for it (the inverse of :func:`decode_register`)."""
    from fieldstation.modbus_client import to_registers

    raw: int | float = value / r.scale
    if not r.type.startswith("float"):
        raw = round(raw)
    words = to_registers(raw, r.type, r.word_order)
    return _swap_bytes(words) if r.byte_order == "little" else words


# -- the driver --------------------------------------------------------------------------------------


class RS485(BaseModel):
    """RS-485 transceiver direction (DE/RE) driven by RTS, through the kernel's RS-485 mode."""

    model_config = ConfigDict(extra="forbid")

    rts_level_for_tx: bool = Field(True, description="RTS level while sending.")
    rts_level_for_rx: bool = Field(False, description="RTS level while receiving.")
    delay_before_tx: float | None = Field(None, ge=0, description="Seconds between raising RTS and sending.")
    delay_before_rx: float | None = Field(None, ge=0, description="Seconds between the last byte and releasing RTS.")


class Modbus(Sensor):
    """One meter (a Modbus device id) on a serial port or a TCP address."""

    driver: ClassVar[str] = "modbus"
    requires: ClassVar[tuple[str, ...]] = ("pymodbus", "serial")

    model: str = Field(description="A shipped register map (orno_we515, eastron_sdm120, …) or a path to a .toml map.")
    port: str | None = Field(None, description="Serial port of the RS-485 bus, e.g. /dev/ttyUSB0 (RTU).")
    host: str | None = Field(None, description="Modbus TCP address (a meter or a gateway), instead of port.")
    tcp_port: int = Field(502, ge=1, le=65535, description="TCP port with host.")
    framer: Literal["auto", "rtu", "socket"] = Field(
        "auto", description="auto: RTU on a serial port, Modbus TCP on a host; rtu with host: RTU-over-TCP gateways."
    )
    device_id: int = Field(1, ge=0, le=247, description="The meter's Modbus address (slave id).")
    baudrate: int | None = Field(None, description="Serial speed; default from the map (the factory setting).")
    parity: Literal["N", "E", "O"] | None = Field(None, description="Serial parity; default from the map.")
    stopbits: Literal[1, 2] | None = Field(None, description="Serial stop bits; default from the map.")
    rs485: RS485 | None = Field(None, description="Drive the transceiver's direction with RTS (kernel RS-485 mode).")
    request_timeout: float = Field(0.5, gt=0, le=10, description="Seconds to wait for each answer.")
    fields: list[str] | None = Field(None, description="Read only these fields of the map (default: all).")
    max_gap: int | None = Field(None, ge=0, le=124, description="Read across this many unmapped registers.")
    interval: float = Field(10.0, description="Seconds between polls.")

    _map: RegisterMap = PrivateAttr()
    _plan: list[Request] = PrivateAttr(default_factory=list)
    _bus: Any = PrivateAttr(default=None)

    @field_validator("model")
    @classmethod
    def _map_loads(cls, v: str) -> str:
        load_map(v)  # raises ValueError with a one-line message
        return v

    @model_validator(mode="after")
    def _where(self) -> Modbus:
        if (self.port is None) == (self.host is None):
            raise ValueError("give either port (RTU on a serial port) or host (Modbus TCP)")
        self._map = load_map(self.model)
        registers = self._map.registers
        if self.fields is not None:
            known = {r.field for r in registers}
            unknown = [f for f in self.fields if f not in known]
            if unknown:
                raise ValueError(f"fields {unknown} are not in the {self.model} map (it has {sorted(known)})")
            registers = [r for r in registers if r.field in self.fields]
        gap = self.max_gap if self.max_gap is not None else self._map.protocol.max_gap
        self._plan = plan(registers, self._map.protocol.max_registers, gap)
        if isinstance(self.unit, str) and not self.unit:
            self.unit = {r.field: r.unit for r in registers}
        return self

    @property
    def requests(self) -> list[Request]:
        """The requests of one poll."""
        return self._plan

    @property
    def register_map(self) -> RegisterMap:
        return self._map

    def declared_fields(self) -> list[str]:
        return [r.field for q in self._plan for r in q.registers]

    def dashboard_fields(self) -> list[str]:
        return [r.field for q in self._plan for r in q.registers]

    def endpoint(self) -> Any:
        from fieldstation.modbus_client import Endpoint, RS485Settings, SerialSettings

        rs485 = RS485Settings(**self.rs485.model_dump()) if self.rs485 else None
        if self.port is not None:
            d = self._map.serial
            settings = SerialSettings(self.baudrate or d.baudrate, self.parity or d.parity, self.stopbits or d.stopbits)
            return Endpoint(
                "serial", self.port, framer="socket" if self.framer == "socket" else "rtu", serial=settings, rs485=rs485
            )
        assert self.host is not None
        return Endpoint("tcp", self.host, self.tcp_port, framer="rtu" if self.framer == "rtu" else "socket")

    @property
    def bus(self) -> str:
        return self.port if self.port is not None else f"tcp://{self.host}:{self.tcp_port}"

    def open(self) -> None:
        from fieldstation.modbus_client import ModbusError, acquire

        if self._bus is None:
            try:
                self._bus = acquire(self.endpoint())
            except ModbusError as exc:
                raise SensorError(str(exc)) from None

    def read(self) -> dict[str, float]:
        from fieldstation.modbus_client import ModbusError

        if self._bus is None:
            self.open()
        answers: list[list[int]] = []
        try:
            for req in self._plan:
                answers.append(
                    self._bus.read(req.function, req.address, req.count, self.device_id, self.request_timeout)
                )
        except ModbusError as exc:
            # Stop at the first failure: a dead meter costs one timeout per poll, not one per request.
            raise SensorError(str(exc)) from None
        return decode(self._plan, answers)

    def close(self) -> None:
        from fieldstation.modbus_client import release

        if self._bus is not None:
            bus, self._bus = self._bus, None
            release(bus)
