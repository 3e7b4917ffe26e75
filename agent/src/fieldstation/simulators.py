"""Protocol peers that stand in for devices: for demos (``fieldstation simulate``), tests and benchmarks.

Each speaks the real protocol on a real socket or serial port, so the drivers under test are the production ones:

- :class:`MeterSimulator`: pymodbus's own server holding one or more meters' register maps, over TCP or a serial
  port (a ``socat`` pty pair in tests), with per-meter answer delays and silent (dead) devices.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from typing import Any

from fieldstation.sensors.modbus import RegisterMap, encode_register


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
