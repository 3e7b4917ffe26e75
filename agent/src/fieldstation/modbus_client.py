"""The one module that talks to pymodbus: shared bus owners, one register read, typed errors.

pymodbus is pinned (``pymodbus>=3.11,<4`` in the ``modbus`` extra) and used only here, because its API moves:
3.10 renamed the ``slave=`` keyword to ``device_id=`` (Debian trixie's ``python3-pymodbus`` 3.8 still says
``slave=``), and 4.0 will drop the old datastore classes. :func:`_device_keyword` picks the keyword the installed
version takes.

Several meters on one RS-485 port share one :class:`Bus`: one serial port opened once, one client, requests made
one at a time. The scheduler already reads sensors with the same :attr:`~fieldstation.sensor.Sensor.bus` in one
worker thread; the bus lock makes that hold for any caller. Every request carries its meter's own timeout and is
never retried here (``retries=0``): a dead meter costs one timeout per poll and the next meter goes on at once.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from pymodbus import FramerType, ModbusException
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ConnectionException

Function = Literal["holding", "input"]

#: Modbus exception codes (Modbus Application Protocol v1.1b3, section 7).
EXCEPTION_CODES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}

#: Largest register count of one read request (Modbus Application Protocol, function codes 3 and 4).
MAX_REGISTERS = 125

# pymodbus logs every timeout and CRC error itself; the scheduler already logs a failing sensor once.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class ModbusError(Exception):
    """A failed request, described in one line."""


def _device_keyword() -> str:
    params = inspect.signature(ModbusTcpClient.read_holding_registers).parameters
    return "device_id" if "device_id" in params else "slave"


DEVICE_KEYWORD = _device_keyword()


@dataclass(frozen=True, slots=True)
class SerialSettings:
    baudrate: int
    parity: Literal["N", "E", "O"]
    stopbits: int
    bytesize: int = 8

    def __str__(self) -> str:
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


@dataclass(frozen=True, slots=True)
class RS485Settings:
    """Driver-enable (DE/RE) through RTS, set by the kernel's RS-485 mode (``TIOCSRS485``)."""

    rts_level_for_tx: bool = True
    rts_level_for_rx: bool = False
    delay_before_tx: float | None = None
    delay_before_rx: float | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a bus is: a serial port (RTU) or a TCP address (Modbus TCP, or RTU framing through a gateway)."""

    kind: Literal["serial", "tcp"]
    address: str  # the device path, or the host
    port: int = 502
    framer: Literal["rtu", "socket"] = "rtu"
    serial: SerialSettings | None = None
    rs485: RS485Settings | None = None

    @property
    def key(self) -> str:
        return self.address if self.kind == "serial" else f"tcp://{self.address}:{self.port}"

    def __str__(self) -> str:
        return self.key


class Bus:
    """One open connection and the lock that makes its requests take turns."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.lock = threading.Lock()
        self.users = 0
        #: Requests sent since the bus was opened (for tests and the benchmark).
        self.requests = 0
        self._client: ModbusSerialClient | ModbusTcpClient = self._new_client()

    def _new_client(self) -> ModbusSerialClient | ModbusTcpClient:
        ep = self.endpoint
        framer = FramerType.RTU if ep.framer == "rtu" else FramerType.SOCKET
        if ep.kind == "serial":
            s = ep.serial or SerialSettings(9600, "N", 1)
            return ModbusSerialClient(
                ep.address,
                framer=framer,
                baudrate=s.baudrate,
                parity=s.parity,
                stopbits=s.stopbits,
                bytesize=s.bytesize,
                timeout=1.0,
                retries=0,
            )
        return ModbusTcpClient(ep.address, port=ep.port, framer=framer, timeout=1.0, retries=0)

    def _connect(self, timeout: float) -> None:
        client = self._client
        if client.connected:
            return
        client.comm_params.timeout_connect = timeout
        if not client.connect():
            raise ModbusError(f"cannot open {self.endpoint}")
        if self.endpoint.rs485 is not None and isinstance(client, ModbusSerialClient):
            import serial.rs485

            r = self.endpoint.rs485
            try:
                client.socket.rs485_mode = serial.rs485.RS485Settings(  # type: ignore[union-attr]
                    rts_level_for_tx=r.rts_level_for_tx,
                    rts_level_for_rx=r.rts_level_for_rx,
                    delay_before_tx=r.delay_before_tx,
                    delay_before_rx=r.delay_before_rx,
                )
            except (OSError, ValueError) as exc:
                self._close()
                raise ModbusError(
                    f"{self.endpoint}: the port has no RS-485 mode for RTS direction control ({exc})"
                ) from None

    def read(self, function: Function, address: int, count: int, device_id: int, timeout: float) -> list[int]:
        """Read ``count`` registers from ``address`` of one device, within ``timeout`` seconds."""
        what = f"{function} registers 0x{address:04X}+{count} of device {device_id} on {self.endpoint}"
        with self.lock:
            self._connect(timeout)
            client: Any = self._client  # typed loosely: the device keyword differs between pymodbus versions
            # The request timeout lives in the client's CommParams; set it per request, since meters sharing a
            # bus may each have their own.
            client.comm_params.timeout_connect = timeout
            call = client.read_holding_registers if function == "holding" else client.read_input_registers
            self.requests += 1
            try:
                response: Any = call(address, count=count, **{DEVICE_KEYWORD: device_id})
            except ConnectionException as exc:
                self._close()
                raise ModbusError(f"{what}: connection failed ({exc})") from None
            except ModbusException:
                # No (valid) answer in time: silence, or frames with a bad CRC, which pymodbus discards.
                raise ModbusError(f"{what}: no valid answer within {timeout:g} s") from None
        if response.isError():
            code = getattr(response, "exception_code", 0)
            raise ModbusError(f"{what}: exception {code} ({EXCEPTION_CODES.get(code, 'unknown')})")
        registers: list[int] = list(response.registers)
        if len(registers) != count:
            raise ModbusError(f"{what}: {len(registers)} registers in the answer")
        return registers

    def _close(self) -> None:
        client: Any = self._client  # pymodbus's close() is untyped
        client.close()

    def close(self) -> None:
        with self.lock:
            self._close()


_buses: dict[str, Bus] = {}
_buses_lock = threading.Lock()


def acquire(endpoint: Endpoint) -> Bus:
    """The bus for ``endpoint``, shared by every meter on it. Settings must agree between meters."""
    with _buses_lock:
        bus = _buses.get(endpoint.key)
        if bus is None:
            bus = _buses[endpoint.key] = Bus(endpoint)
        elif bus.endpoint != endpoint:
            raise ModbusError(
                f"{endpoint.key} is used with different settings by two meters ({bus.endpoint.serial} and "
                f"{endpoint.serial}): every meter on one bus must use the same speed, parity and framing"
            )
        bus.users += 1
        return bus


def release(bus: Bus) -> None:
    with _buses_lock:
        bus.users -= 1
        if bus.users <= 0:
            _buses.pop(bus.endpoint.key, None)
            bus.close()


@contextmanager
def opened(endpoint: Endpoint) -> Iterator[Bus]:
    bus = acquire(endpoint)
    try:
        yield bus
    finally:
        release(bus)


def convert(registers: list[int], data_type: str, word_order: Literal["big", "little"]) -> int | float:
    """Registers → number, with pymodbus's own conversions (``int16`` … ``float64``)."""
    dt = getattr(ModbusTcpClient.DATATYPE, data_type.upper())
    value = ModbusTcpClient.convert_from_registers(registers, dt, word_order=word_order)
    assert isinstance(value, (int, float))
    return value


def to_registers(value: int | float, data_type: str, word_order: Literal["big", "little"]) -> list[int]:
    """Number → registers, the inverse of :func:`convert` (simulators use it)."""
    dt = getattr(ModbusTcpClient.DATATYPE, data_type.upper())
    return list(ModbusTcpClient.convert_to_registers(value, dt, word_order=word_order))
