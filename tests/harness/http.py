"""Fixture: a real HTTP server (http.server) on a free loopback port, serving canned answers per path.

``server.route("/path", body, status=200, delay=0.0)`` sets what a GET of that path answers; a ``delay`` holds the
answer back (released at once when the fixture stops, so teardown never waits for it). Unknown paths get 404.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Route:
    body: bytes
    status: int = 200
    content_type: str = "application/json"
    delay: float = 0.0


@dataclass
class JsonServer:
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

        httpd = ThreadingHTTPServer((self.host, 0), Handler)
        httpd.daemon_threads = False
        httpd.block_on_close = True  # server_close joins every handler thread
        self._server = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)
            assert not self._thread.is_alive(), "HTTP server did not stop"


@pytest.fixture
def http_server() -> Iterator[JsonServer]:
    """A threaded http.server at 127.0.0.1:<free port>; add answers with ``route``."""
    server = JsonServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
