"""Protocol peers that stand in for devices: for demos (``fieldstation simulate``), tests and benchmarks.

Each speaks the real protocol on a real socket or serial port, so the drivers under test are the production ones:

- :class:`MeterSimulator`: pymodbus's own server holding one or more meters' register maps, over TCP or a serial
  port (a ``socat`` pty pair in tests), with per-meter answer delays and silent (dead) devices.
- :class:`ArduinoSimulator`: a board running agent/arduino/fieldstation_analog: one 24-byte frame per request
  byte, or misbehaving on purpose (``chunked``: 1-byte and odd-sized pieces; ``short``; ``silent``).
- :class:`HttpJsonSimulator`: an HTTP server answering canned JSON per path (``route``), with delays and errors.
- :class:`Station`: all of them at once with changing values, for ``fieldstation simulate`` and ``demo``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import shutil
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from fieldstation.sensors.modbus import RegisterMap, encode_register

# pymodbus's server logs every connection at INFO; the simulators report what matters themselves.
logging.getLogger("pymodbus").setLevel(logging.WARNING)


def _serve_in_thread(server: Any) -> tuple[Any, threading.Thread]:
    """A socketserver serving from a thread; server_close joins every handler thread."""
    server.daemon_threads = False
    server.block_on_close = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


def _stop_thread(server: Any, thread: threading.Thread | None, what: str) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()
    if thread is not None:
        thread.join(10)
        if thread.is_alive():
            raise RuntimeError(f"{what} did not stop")


class _LoopThread:
    """An asyncio loop in a daemon thread, for servers that are async but used from sync code."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class MeterSimulator:
    """Meters on one bus, served by pymodbus's server: ``{device_id: (register map, {field: value})}``.

    ``delay[device_id]`` makes that meter answer late; ``silent`` holds device ids that never answer (a dead meter
    on a shared bus). ``requests`` counts the requests the server received, per device id.
    """

    def __init__(
        self,
        meters: Mapping[int, tuple[RegisterMap, Mapping[str, float]]],
        *,
        host: str = "127.0.0.1",
        tcp_port: int = 0,
        serial_port: str | None = None,
        baudrate: int = 9600,
    ) -> None:
        self.maps = {dev: m for dev, (m, _) in meters.items()}
        self.values: dict[int, dict[str, float]] = {dev: dict(v) for dev, (_, v) in meters.items()}
        self.delay: dict[int, float] = {}
        self.silent: set[int] = set()
        self.requests: dict[int, int] = {}
        self._host, self._tcp_port, self._serial_port, self._baudrate = host, tcp_port, serial_port, baudrate
        self._loop: _LoopThread | None = None
        self._server: Any = None
        self.port = 0

    # pymodbus calls this for every request; it fills the addressed registers from the current values.
    def _action(self, dev: int) -> Callable[..., Any]:
        from pymodbus.constants import ExcCodes

        regmap = self.maps[dev]
        function_of = {3: "holding", 4: "input"}

        async def action(  # noqa: PLR0917 -- the signature pymodbus calls
            function_code: int, start_address: int, address: int, count: int, current: list[int], set_values: Any
        ) -> ExcCodes | None:
            self.requests[dev] = self.requests.get(dev, 0) + 1
            if dev in self.silent:
                await asyncio.sleep(3600)  # never answers; the client times out
            if self.delay.get(dev):
                await asyncio.sleep(self.delay[dev])
            function = function_of.get(function_code)
            for r in regmap.registers:
                if r.function != function or r.field not in self.values[dev]:
                    continue
                words = encode_register(r, self.values[dev][r.field])
                for i, w in enumerate(words):
                    j = r.address + i - start_address
                    if 0 <= j < len(current):
                        current[j] = w
            return None

        return action

    def _devices(self) -> list[Any]:
        from pymodbus.simulator import DataType, SimData, SimDevice

        devices = []
        for dev, regmap in self.maps.items():
            blocks: dict[str, list[Any]] = {}
            for function in ("holding", "input"):
                regs = [r for r in regmap.registers if r.function == function]
                if regs:
                    # One block from the first to the last register: a meter that answers reads across gaps.
                    start, end = min(r.address for r in regs), max(r.address + r.width for r in regs)
                    blocks[function] = [SimData(start, count=end - start, values=0, datatype=DataType.REGISTERS)]
            unused = [SimData(0, count=1, values=False, datatype=DataType.BITS)]
            devices.append(
                SimDevice(
                    id=dev,
                    simdata=(unused, unused, blocks.get("holding", [SimData(0)]), blocks.get("input", [SimData(0)])),
                    action=self._action(dev),
                )
            )
        return devices

    def start(self) -> MeterSimulator:
        from pymodbus import FramerType
        from pymodbus.server import ModbusSerialServer, ModbusTcpServer

        self._loop = _LoopThread("modbus-sim")

        async def start() -> Any:
            if self._serial_port is not None:
                server: Any = ModbusSerialServer(
                    self._devices(), framer=FramerType.RTU, port=self._serial_port, baudrate=self._baudrate
                )
            else:
                server = ModbusTcpServer(self._devices(), address=(self._host, self._tcp_port))
            await server.serve_forever(background=True)
            return server

        self._server = self._loop.run(start())
        if self._serial_port is None:
            self.port = self._server.transport.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            self._loop.run(self._server.shutdown())
        finally:
            # A silent meter's pending answer is a sleeping task: cancel what is left before the loop stops.
            async def cancel_rest() -> None:
                current = asyncio.current_task()
                for task in asyncio.all_tasks():
                    if task is not current:
                        task.cancel()

            self._loop.run(cancel_rest())
            self._loop.stop()
            self._loop = None

    def __enter__(self) -> MeterSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- Arduino ------------------------------------------------------------------------------------------

Mode = Literal["normal", "chunked", "short", "silent"]

#: Piece sizes of a chunked frame: 1-byte and odd-sized, 24 bytes in all.
CHUNKS = (1, 1, 3, 1, 5, 2, 7, 1, 3)


def frame_of(values: list[int], byte_order: Literal["big", "little"] = "big") -> bytes:
    """The 24 bytes the sketch sends for 12 values (values above 0xFFFF are truncated like a corrupt board)."""
    return b"".join((v & 0xFFFF).to_bytes(2, byte_order) for v in values)


@dataclass
class ArduinoSimulator:
    values: list[int] = field(default_factory=lambda: [0] * 12)
    byte_order: Literal["big", "little"] = "big"
    mode: Mode = "normal"
    short_bytes: int = 7
    chunk_delay: float = 0.01
    requests: list[int] = field(default_factory=list)
    connections: int = 0
    host: str = "127.0.0.1"
    port: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: socketserver.ThreadingTCPServer | None = None
    _thread: threading.Thread | None = None

    def frame(self) -> bytes:
        with self.lock:
            return frame_of(self.values, self.byte_order)

    def _serve_one(self, sock: socket.socket) -> None:
        with self.lock:
            self.connections += 1
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each piece its own segment
        sock.settimeout(0.05)
        while not self.stopping.is_set():
            try:
                data = sock.recv(16)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return  # the client closed
            for byte in data:
                with self.lock:
                    self.requests.append(byte)
                if not self._answer(sock):
                    return

    def _answer(self, sock: socket.socket) -> bool:
        """Send one frame the way ``mode`` says; False to close the connection."""
        frame = self.frame()
        try:
            if self.mode == "normal":
                sock.sendall(frame)
            elif self.mode == "chunked":
                pos, i = 0, 0
                while pos < len(frame) and not self.stopping.is_set():
                    n = CHUNKS[i % len(CHUNKS)]
                    sock.sendall(frame[pos : pos + n])
                    pos, i = pos + n, i + 1
                    time.sleep(self.chunk_delay)
            elif self.mode == "short":
                sock.sendall(frame[: self.short_bytes])
                return False
        except OSError:  # the client gave up first
            return False
        return True  # silent: nothing sent, keep the connection open

    def start(self) -> None:
        board = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                board._serve_one(self.request)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True  # a fixed port is usable again at once, as with HTTPServer

        self._server, self._thread = _serve_in_thread(Server((self.host, self.port), Handler))
        self.port = self._server.server_address[1]

    def stop(self) -> None:
        self.stopping.set()
        _stop_thread(self._server, self._thread, "the Arduino simulator")


# -- HTTP JSON ----------------------------------------------------------------------------------------


@dataclass
class Route:
    body: bytes
    status: int = 200
    content_type: str = "application/json"
    delay: float = 0.0


@dataclass
class HttpJsonSimulator:
    host: str = "127.0.0.1"
    port: int = 0
    routes: dict[str, Route] = field(default_factory=dict)
    #: (path with query, request headers) of every request, in order.
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def route(
        self, path: str, body: Any, *, status: int = 200, delay: float = 0.0, content_type: str = "application/json"
    ) -> str:
        """Serve ``body`` (bytes or str as is, anything else as JSON) at ``path``; returns the URL."""
        raw = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else json.dumps(body).encode()
        with self.lock:
            self.routes[path] = Route(raw, status, content_type, delay)
        return self.url(path)

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        with self.lock:
            self.requests.append((handler.path, dict(handler.headers.items())))
            route = self.routes.get(handler.path.split("?", 1)[0])
        if route is None:
            route = Route(b'{"error": "not found"}', 404)
        if route.delay:
            self.stopping.wait(route.delay)
        try:
            handler.send_response(route.status)
            handler.send_header("Content-Type", route.content_type)
            handler.send_header("Content-Length", str(len(route.body)))
            handler.end_headers()
            handler.wfile.write(route.body)
        except OSError:  # the client gave up waiting
            handler.close_connection = True

    def start(self) -> None:
        server_ref = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0 (the default): one request per connection, so no idle keep-alive keeps a thread open.
            timeout = 5  # a client that connects and says nothing cannot hold up teardown longer than this

            def do_GET(self) -> None:
                server_ref._answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server, self._thread = _serve_in_thread(ThreadingHTTPServer((self.host, self.port), Handler))
        self.port = self._server.server_address[1]

    def stop(self) -> None:
        self.stopping.set()
        _stop_thread(self._server, self._thread, "the HTTP simulator")


# -- a whole station ----------------------------------------------------------------------------------

#: Default ports of ``fieldstation simulate`` (and of the example config's Arduino and HTTP entries).
DEFAULT_PORTS = {"modbus": 5020, "arduino": 5000, "http": 8089}


class Station:
    """Every simulator at once, with slowly changing values: what ``fieldstation simulate`` and ``demo`` run.

    Modbus TCP (an ORNO WE-515 as device 1, an Eastron SDM630 as device 2), Modbus RTU over a socat pty pair when
    socat is installed (a WE-515 and an SDM120 at 9600 8N1), an Arduino board and an HTTP JSON weather station.
    ``ports`` overrides :data:`DEFAULT_PORTS`; 0 picks a free port.
    """

    def __init__(self, directory: Path, ports: Mapping[str, int] | None = None, *, modbus: bool = True) -> None:
        self.directory = directory
        self.modbus = modbus
        self.ports = {**DEFAULT_PORTS, **(ports or {})}
        self.tcp_meters: MeterSimulator | None = None
        self.rtu_meters: MeterSimulator | None = None
        self.rtu_port: str | None = None
        self.arduino: ArduinoSimulator | None = None
        self.http: HttpJsonSimulator | None = None
        self._socat: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._t0 = time.monotonic()

    def _values(self) -> dict[str, dict[str, float]]:
        t = time.monotonic() - self._t0
        wave = math.sin(2 * math.pi * t / 60)
        power = 2400 + 600 * wave
        return {
            "we515": {
                "frequency": 50.0 + 0.02 * wave,
                "voltage": 230.0 + 2 * wave,
                "current": power / 230.0,
                "active_power": power,
                "reactive_power": 150,
                "apparent_power": power * 1.02,
                "power_factor": 0.98,
                "active_energy": 1234.5 + power * t / 3.6e6,
                "active_energy_t1": 1000.25 + power * t / 3.6e6,
                "reactive_energy": 88.0,
            },
            "sdm": {
                "voltage": 231.0 + wave,
                "voltage_l1": 231.0 + wave,
                "voltage_l2": 229.5,
                "voltage_l3": 230.5,
                "current": 4.2,
                "active_power": 5100 + 900 * wave,
                "frequency": 50.0,
                "active_energy": 40500.0 + t / 100,
            },
        }

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            values = self._values()
            for sim, models in ((self.tcp_meters, ("we515", "sdm")), (self.rtu_meters, ("we515", "sdm"))):
                if sim is not None:
                    for dev, model in zip((1, 2), models, strict=True):
                        sim.values[dev].update(values[model])
            if self.arduino is not None:
                t = time.monotonic() - self._t0
                with self.arduino.lock:
                    self.arduino.values = [int(2048 + 1500 * math.sin(t / 30 + ch)) for ch in range(12)]
            if self.http is not None:
                self.http.route("/weather", self._weather())

    def _weather(self) -> dict[str, Any]:
        t = time.monotonic() - self._t0
        return {"station": "roof", "data": {"outdoor": {"temp": round(8 + 3 * math.sin(t / 120), 2), "rh": 81}}}

    def start(self) -> Station:
        from fieldstation.sensors.modbus import load_map

        we, sdm630, sdm120 = load_map("orno_we515"), load_map("eastron_sdm630"), load_map("eastron_sdm120")
        values = self._values()
        if self.modbus:
            self.tcp_meters = MeterSimulator(
                {1: (we, values["we515"]), 2: (sdm630, values["sdm"])}, tcp_port=self.ports["modbus"]
            ).start()
        if self.modbus and shutil.which("socat"):
            self.directory.mkdir(parents=True, exist_ok=True)
            server, client = self.directory / "ttyMETER-sim", self.directory / "ttyMETER"
            self._socat = subprocess.Popen(
                ["socat", f"pty,raw,echo=0,link={server}", f"pty,raw,echo=0,link={client}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while not (server.exists() and client.exists()) and time.monotonic() < deadline:
                time.sleep(0.02)
            if client.exists():
                self.rtu_port = str(client)
                self.rtu_meters = MeterSimulator(
                    {1: (we, values["we515"]), 2: (sdm120, values["sdm"])}, serial_port=str(server)
                ).start()
        self.arduino = ArduinoSimulator(port=self.ports["arduino"])
        self.arduino.start()
        self.http = HttpJsonSimulator(port=self.ports["http"])
        self.http.start()
        self.http.route("/weather", self._weather())
        self._ticker = threading.Thread(target=self._tick, name="station-sim", daemon=True)
        self._ticker.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(5)
        for sim in (self.arduino, self.http, self.tcp_meters, self.rtu_meters):
            if sim is not None:
                sim.stop()
        if self._socat is not None:
            self._socat.terminate()
            self._socat.wait(5)

    def __enter__(self) -> Station:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def config(self) -> str:
        """A config.py with one sensor per simulated device (and the Pi's own health)."""
        assert self.tcp_meters is not None and self.arduino is not None and self.http is not None
        rtu = ""
        if self.rtu_port is not None:
            rtu = f"""
        # RTU over a pty pair: socat ptys take no parity, so 8N1 here (the meters' factory default is 8E1/8N1).
        Modbus(name="rtu_we515", model="orno_we515", port={self.rtu_port!r}, parity="N", device_id=1, interval=2),
        Modbus(name="rtu_sdm120", model="eastron_sdm120", port={self.rtu_port!r}, baudrate=9600, device_id=2,
               fields=["voltage", "active_power", "active_energy"], interval=2),"""
        return f"""# Written by `fieldstation simulate`: each driver that runs without hardware, reading the simulators.
# Try: fieldstation once -n 3 --timing {self.directory / "config.py"}
from fieldstation import Linear
from fieldstation.sensors.arduino import Arduino
from fieldstation.sensors.http_json import HttpJson
from fieldstation.sensors.modbus import Modbus
from fieldstation.sensors.pi import Pi

sensors = {{
    "Energy": [
        Modbus(name="we515", model="orno_we515", host="127.0.0.1", tcp_port={self.tcp_meters.port}, device_id=1,
               interval=2),
        Modbus(name="sdm630", model="eastron_sdm630", host="127.0.0.1", tcp_port={self.tcp_meters.port}, device_id=2,
               fields=["voltage_l1", "voltage_l2", "voltage_l3", "active_power", "active_energy"], interval=2),{rtu}
    ],
    "Lab": [
        Arduino(name="due", host="127.0.0.1", port={self.arduino.port}, channels={{0: "pressure", 1: "flow"}},
                conversion={{"pressure": Linear(slope=2.0)}}, unit={{"pressure": "bar", "flow": "V"}}, interval=1),
        HttpJson(name="roof", url="http://127.0.0.1:{self.http.port}/weather",
                 fields={{"temp": "data.outdoor.temp", "rh": "data.outdoor.rh"}}, unit={{"temp": "°C", "rh": "%"}},
                 interval=5),
    ],
    "Host": [Pi(name="pi", interval=10)],
}}
"""
