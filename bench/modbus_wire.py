"""Modbus wire figures for a register map: requests per poll, bytes on the wire, and the wire-time bound.

For each map (default: the ORNO WE-515) it prints the driver's own request plan (contiguous registers only, the
map's setting) next to the fewest requests the protocol allows (gaps read through, at most 125 registers each),
the RTU bytes of every request and answer, and the time those bytes take at the meter's speed:

- a read request is 8 bytes (address, function, start, count, CRC); its answer is 5 + 2·count bytes;
- each byte is 1 start + 8 data + parity + stop bits on the wire (11 bits at 8E1 or 8N2, 10 at 8N1);
- frames are separated by at least 3.5 character times of silence (Modbus over serial line, §2.5.1.1).

Then it measures the same poll for real: pymodbus's server as the meter behind a socat pty pair (8N1, the ptys
take no parity), counting requests at the server and timing the driver. A pty has no baud rate, so the measured
time is the software's share; the wire bound is what the RS-485 line adds.

    .venv-3.11/bin/python bench/modbus_wire.py [orno_we515 eastron_sdm120 ...]
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fieldstation.sensors.modbus import Modbus, Request, load_map, plan
from fieldstation.simulators import MeterSimulator

REQUEST_BYTES = 8
INTER_FRAME_CHARS = 3.5


def answer_bytes(count: int) -> int:
    return 5 + 2 * count


def bits_per_char(parity: str, stopbits: int) -> int:
    return 1 + 8 + (0 if parity == "N" else 1) + stopbits


def wire(requests: list[Request], baud: int, parity: str, stopbits: int) -> tuple[int, float]:
    """(bytes on the wire, seconds) for one poll: each request and answer plus the silences between frames."""
    nbytes = sum(REQUEST_BYTES + answer_bytes(q.count) for q in requests)
    char = bits_per_char(parity, stopbits) / baud
    frames = 2 * len(requests)
    return nbytes, nbytes * char + frames * INTER_FRAME_CHARS * char


def measure(model: str, polls: int = 50) -> tuple[int, float, float]:
    """(requests per poll counted by the server, median and p95 ms per poll) over a socat pty pair."""
    regmap = load_map(model)
    values = {r.field: 1.0 for r in regmap.registers}
    with tempfile.TemporaryDirectory() as tmp:
        srv, cli = Path(tmp) / "srv", Path(tmp) / "cli"
        socat = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={srv}", f"pty,raw,echo=0,link={cli}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while not (srv.exists() and cli.exists()) and time.monotonic() < deadline:
                time.sleep(0.02)
            with MeterSimulator({1: (regmap, values)}, serial_port=str(srv)) as sim:
                meter = Modbus(name="bench", model=model, port=str(cli), parity="N", baudrate=9600)
                try:
                    meter.read()  # connect
                    sim.requests.clear()
                    times = []
                    for _ in range(polls):
                        t0 = time.perf_counter()
                        meter.read()
                        times.append((time.perf_counter() - t0) * 1000)
                finally:
                    meter.close()
                per_poll = sim.requests.get(1, 0) // polls
        finally:
            socat.terminate()
            socat.wait(5)
    times.sort()
    return per_poll, statistics.median(times), times[int(0.95 * (len(times) - 1))]


def main(models: list[str]) -> None:
    for model in models:
        regmap = load_map(model)
        s = regmap.serial
        ours = plan(regmap.registers, regmap.protocol.max_registers, regmap.protocol.max_gap)
        fewest = plan(regmap.registers, 125, 124)
        factory = f"{s.baudrate} 8{s.parity}{s.stopbits}"
        print(f"== {regmap.model} ({model}): {len(regmap.registers)} fields, factory {factory}")
        for name, reqs in (("driver plan (contiguous)", ours), ("fewest possible (gaps read)", fewest)):
            nbytes, seconds = wire(reqs, s.baudrate, s.parity, s.stopbits)
            registers = sum(q.count for q in reqs)
            print(
                f"  {name:<28} {len(reqs):3d} requests  {registers:4d} registers  {nbytes:5d} bytes  "
                f"wire time ≥ {seconds * 1000:7.1f} ms at {s.baudrate} baud"
            )
        print("  requests: " + ", ".join(f"{q.function} 0x{q.address:04X}+{q.count}" for q in ours))
        if shutil.which("socat"):
            per_poll, median, p95 = measure(model)
            print(
                f"  measured over a pty (no baud limit): {per_poll} requests per poll counted by the meter, "
                f"median {median:.1f} ms, p95 {p95:.1f} ms per poll"
            )
        else:
            print("  (socat not installed: no measurement)")


if __name__ == "__main__":
    main(sys.argv[1:] or ["orno_we515"])
