"""`fieldstation.influxql`: one-line errors in words for a server that is not there or does not answer."""

from __future__ import annotations

import socket
import threading

import pytest

from fieldstation.influxql import Influx, InfluxError


def test_nobody_listening_is_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the query: nothing listens there
    with pytest.raises(InfluxError) as err:
        Influx(f"http://127.0.0.1:{port}").query("SHOW DATABASES")
    assert str(err.value) == f"http://127.0.0.1:{port}: cannot connect: connection refused"
    with pytest.raises(InfluxError, match=r"^http://127\.0\.0\.1:\d+: write: cannot connect: connection refused$"):
        Influx(f"http://127.0.0.1:{port}").write(["m v=1 1"], "db")
    with pytest.raises(InfluxError, match=r"not answering after 0\.5 s \(cannot connect: connection refused\)$"):
        Influx(f"http://127.0.0.1:{port}").wait_ready(0.5)


def test_a_reply_that_is_not_influxdb_is_named() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot json!")

        t = threading.Thread(target=answer)
        t.start()
        with pytest.raises(InfluxError, match=r": not an InfluxDB answer \("):
            Influx(f"http://127.0.0.1:{server.getsockname()[1]}").query("SHOW DATABASES")
        t.join(5)
