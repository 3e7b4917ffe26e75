"""Fixture: a fake Arduino board speaking the fieldstation_analog protocol on a free loopback port.

It answers like agent/arduino/fieldstation_analog: every byte received gets one 24-byte frame of the 12 values
in ``values``. ``mode`` makes it misbehave: ``chunked`` (the frame in 1-byte and odd-sized pieces, with small
delays), ``short`` (``short_bytes`` of the frame, then it closes), ``silent`` (reads, never answers).
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import pytest

Mode = Literal["normal", "chunked", "short", "silent"]

#: Piece sizes of a chunked frame: 1-byte and odd-sized, 24 bytes in all.
CHUNKS = (1, 1, 3, 1, 5, 2, 7, 1, 3)


def frame_of(values: list[int], byte_order: Literal["big", "little"] = "big") -> bytes:
    """The 24 bytes the sketch sends for 12 values (values above 0xFFFF are truncated like a corrupt board)."""
    return b"".join((v & 0xFFFF).to_bytes(2, byte_order) for v in values)


@dataclass
class FakeBoard:
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

        server = socketserver.ThreadingTCPServer((self.host, 0), Handler)
        server.daemon_threads = False
        server.block_on_close = True  # server_close joins every handler thread
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)
            assert not self._thread.is_alive(), "fake Arduino did not stop"


@pytest.fixture
def arduino_board() -> Iterator[FakeBoard]:
    """A fake fieldstation_analog board at 127.0.0.1:<free port>; set ``values`` and ``mode`` as needed."""
    board = FakeBoard()
    board.start()
    try:
        yield board
    finally:
        board.stop()
