"""Fixtures for Modbus RTU: serial lines made of ``socat`` pty pairs, and a line that corrupts answers.

``rtu_line`` is one RS-485 bus: the meter simulator opens ``line.server`` and the driver ``line.client``; bytes
cross as they would on a wire, in real RTU frames with CRCs. socat's ptys reject parity settings, so tests run
8N1 (see RECIPES.md); the meters' 8E1 factory setting is a port option like any other.

``noisy_line`` puts a relay between two pty pairs that, while ``corrupt`` is set, flips one bit in each frame the
meter sends back: the client sees a bad CRC, exactly as with interference on a long cable.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class PtyPair:
    server: str
    client: str
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def start_pty_pair(directory: Path, name: str) -> PtyPair:
    if shutil.which("socat") is None:
        pytest.fail("socat is not installed (tests/run installs it)")
    server, client = directory / f"{name}-srv", directory / f"{name}-cli"
    proc = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={server}", f"pty,raw,echo=0,link={client}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not (server.exists() and client.exists()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail("socat did not create the pty pair")
        time.sleep(0.02)
    return PtyPair(str(server), str(client), proc)


@pytest.fixture
def rtu_line(tmp_path: Path) -> Iterator[PtyPair]:
    pair = start_pty_pair(tmp_path, "rtu")
    yield pair
    pair.stop()


@dataclass
class NoisyLine:
    """client ⇄ [pty pair A] ⇄ relay ⇄ [pty pair B] ⇄ meter. ``corrupt`` flips a bit in answers."""

    near: PtyPair  # the driver opens near.client
    far: PtyPair  # the meter opens far.server
    corrupt: threading.Event = field(default_factory=threading.Event)
    corrupted: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def client(self) -> str:
        return self.near.client

    @property
    def server(self) -> str:
        return self.far.server

    def start(self) -> None:
        self._thread = threading.Thread(target=self._relay, name="noisy-line", daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        a = os.open(self.near.server, os.O_RDWR | os.O_NOCTTY)
        b = os.open(self.far.client, os.O_RDWR | os.O_NOCTTY)
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([a, b], [], [], 0.05)
                for fd in ready:
                    data = os.read(fd, 4096)
                    if fd == b and self.corrupt.is_set() and data:
                        data = data[:-1] + bytes([data[-1] ^ 0x01])  # the CRC's last byte, or a data byte
                        self.corrupted += 1
                    os.write(b if fd == a else a, data)
        finally:
            os.close(a)
            os.close(b)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.near.stop()
        self.far.stop()


@pytest.fixture
def noisy_line(tmp_path: Path) -> Iterator[NoisyLine]:
    line = NoisyLine(start_pty_pair(tmp_path, "near"), start_pty_pair(tmp_path, "far"))
    line.start()
    yield line
    line.stop()
