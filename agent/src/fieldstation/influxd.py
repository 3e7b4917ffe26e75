"""A throwaway local InfluxDB 1.x server: for `fieldstation demo`, the tests and the benchmarks.

Runs Debian's ``influxd`` with its data in a temporary directory, HTTP and backup RPC on free loopback
ports, no reporting and no ``_internal`` database. Not for production: Ansible installs the real service.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from fieldstation.influxql import Influx

CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{root}/meta"
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = {auth}
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalInfluxd:
    """Start with :meth:`start`, stop with :meth:`stop`; restartable on the same ports and data."""

    def __init__(self, root: Path | None = None, *, auth: bool = False, own_session: bool = False) -> None:
        # own_session: influxd in a session of its own, out of the terminal's process group, so a Ctrl-C reaches
        # only its owner (the demo), which still needs the server to print its summary and then stops it.
        self.own_session = own_session
        self._tmp = None if root else tempfile.mkdtemp(prefix="fieldstation-influxd-")
        self.root = Path(root or self._tmp or "")
        self.root.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        self.rpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.config = self.root / "influxdb.conf"
        self.config.write_text(
            CONFIG.format(root=self.root, http_port=self.http_port, rpc_port=self.rpc_port, auth=str(auth).lower())
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.root / "influxd.log"

    def start(self, timeout: float = 30.0) -> LocalInfluxd:
        binary = shutil.which("influxd")
        if binary is None:
            raise RuntimeError("influxd not found: apt-get install influxdb")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [binary, "run", "-config", str(self.config)],
                stdout=log,
                stderr=log,
                start_new_session=self.own_session,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"influxd exited with {self.proc.returncode}; see {self.log}")
            if self.ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"influxd not ready within {timeout:g} s; see {self.log}")

    def ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as r:  # noqa: S310  (our own loopback URL)
                return bool(r.status == 204)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def query(self, q: str, db: str | None = None, *, auth: tuple[str, str] | None = None) -> list[dict[str, Any]]:
        """Run InfluxQL (timestamps in ns); raises InfluxError on an error reply."""
        return Influx(self.url, auth).query(q, db, epoch="ns")

    def rows(self, q: str, db: str) -> list[dict[str, Any]]:
        """Rows of a query as dicts, tags included, ``time`` in ns."""
        return Influx(self.url).rows(q, db, epoch="ns")
