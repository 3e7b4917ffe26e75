"""Fixture: a real HTTP server (http.server) on a free loopback port, serving canned answers per path.

``server.route("/path", body, status=200, delay=0.0)`` sets what a GET of that path answers; a ``delay`` holds the
answer back (released at once when the fixture stops, so teardown never waits for it). Unknown paths get 404.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fieldstation.simulators import HttpJsonSimulator


@pytest.fixture
def http_server() -> Iterator[HttpJsonSimulator]:
    """A threaded http.server at 127.0.0.1:<free port>; add answers with ``route``."""
    server = HttpJsonSimulator()
    server.start()
    try:
        yield server
    finally:
        server.stop()
